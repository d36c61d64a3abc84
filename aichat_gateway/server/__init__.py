"""The composition root: `create_app` and its lifespan, the services, the CLI, the demo. It imports
every package and nothing imports it (.importlinter's layers contract holds both; a regular package,
so the import graph that contract reads includes it).
"""
