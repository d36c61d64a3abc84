"""Background jobs on Postgres (PgQueuer): enqueue by task name, register handlers and periodic
tasks, run workers. Any package may import it; it imports none of accounts, billing, marketplace
or proxy. `registry` (what runs), `queue` (enqueue, PgQueuer's names and schema), `periods`
(a periodic task's job, once per period), `worker` (the loop), `errors`.
"""
