"""Creating, changing and revoking a user's gateway keys: what `/api/keys` and the dashboard's key
pages both call, so each action is validated, audited (key.created, key.changed, key.revoked) and
announced to every process's key cache the same way whichever door it came through.

Each action and its audit event are one transaction: the event exists exactly when the action does.
The cache is told after the commit (keycache.py: eviction means "ask Postgres again").
"""

from __future__ import annotations

from aichat_gateway import audittrail
from aichat_gateway.accounts import keys as keys_repo
from aichat_gateway.accounts.db import transaction
from aichat_gateway.accounts.keysettings import changes_of, settings_of
from aichat_gateway.accounts.schemas import KeyCreate, KeyPatch
from aichat_gateway.accounts.services import AccountsServices

TARGET = "key"


async def create_key(svc: AccountsServices, owner_id: str, body: KeyCreate, *, ip: str | None) -> keys_repo.CreatedKey:
    settings = settings_of(body, svc.validate_key_routing)
    async with transaction(svc.db) as conn:
        created = await keys_repo.create_key(conn, owner_id, body.name, settings)
        await audittrail.record(
            conn,
            audittrail.KEY_CREATED,
            subject_id=owner_id,
            actor_id=owner_id,
            target_type=TARGET,
            target_id=created.key.id,
            ip=ip,
            detail={"name": created.key.name, "prefix": created.key.prefix},
        )
    return created


async def change_key(
    svc: AccountsServices, owner_id: str, key_id: str, body: KeyPatch, *, ip: str | None
) -> keys_repo.ApiKey:
    """A PATCH (KeyPatch is the allow-list); every process serves the new settings at once."""
    changes = changes_of(body, svc.validate_key_routing)
    async with transaction(svc.db) as conn:
        key, key_hash = await keys_repo.update_key(conn, owner_id, key_id, changes)
        await audittrail.record(
            conn,
            audittrail.KEY_CHANGED,
            subject_id=owner_id,
            actor_id=owner_id,
            target_type=TARGET,
            target_id=key.id,
            ip=ip,
            detail={"name": key.name, "fields": sorted(changes.given)},
        )
    await svc.keys.announce_changed(key_hash)
    return key


async def revoke_key(svc: AccountsServices, owner_id: str, key_id: str, *, ip: str | None) -> None:
    """Revoke (idempotent: only the first revocation is an event); every process refuses it within a second."""
    async with transaction(svc.db) as conn:
        revoked = await keys_repo.revoke(conn, owner_id, key_id)
        if revoked.newly:
            await audittrail.record(
                conn,
                audittrail.KEY_REVOKED,
                subject_id=owner_id,
                actor_id=owner_id,
                target_type=TARGET,
                target_id=key_id,
                ip=ip,
            )
    await svc.keys.announce_revoked(revoked.key_hash)
