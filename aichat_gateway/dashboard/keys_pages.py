"""The buyer's API keys (`/app/keys`): list, create (the secret shown once, with a quickstart), edit a
key's name, routing defaults and spend caps, revoke after a confirmation.

Every action goes through accounts/keyservice.py, as `/api/keys` does: the same validation and
words (errors shown next to their fields), the same audit events, the same cache announcements.
The secret exists only in the answer to the create form; nothing here stores or logs it.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.accounts import keys as keys_repo
from aichat_gateway.accounts import keyservice
from aichat_gateway.accounts.api import client_ip
from aichat_gateway.accounts.errors import InvalidInput, NotFound
from aichat_gateway.accounts.keys import ApiKey, CreatedKey
from aichat_gateway.accounts.schemas import KeyCreate, KeyPatch
from aichat_gateway.dashboard import keyforms, quickstart
from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.pages import page_user, redirect
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import PageUser, Templates

_NEW_KEY_DEFAULTS = {"allow_fallbacks": "on"}


def _row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created": keyforms.when(key.created_at),
        "last_used": keyforms.when(key.last_used_at),
        "revoked": key.revoked_at is not None,
        "revoked_at": keyforms.when(key.revoked_at),
        "caps": key.settings.public(),
        "routing": key.settings.routing,
    }


def _base_url(request: Request) -> str:
    return str(request.base_url) + "v1"


class KeysPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    # ---- the list and the create form ---------------------------------------------------------

    async def index(self, request: Request) -> Response:
        user = await page_user(request)
        return await self._index(request, user, Form(values=dict(_NEW_KEY_DEFAULTS)))

    async def create(self, request: Request) -> Response:
        user = await page_user(request)
        form = await read_form(request, keyforms.FIELDS)
        body = validate(form, KeyCreate, keyforms.body_of(form.values))
        if body is None:
            return await self._index(request, user, form, status_code=400)
        try:
            created = await keyservice.create_key(services(request), user.id, body, ip=client_ip(request))
        except InvalidInput as exc:
            form.refuse(exc.message, keyforms.field_of(exc.param))
            return await self._index(request, user, form, status_code=400)
        return await self._index(request, user, Form(values=dict(_NEW_KEY_DEFAULTS)), created=created)

    async def _index(
        self, request: Request, user: PageUser, form: Form, *, created: CreatedKey | None = None, status_code: int = 200
    ) -> Response:
        found = await keys_repo.list_keys(services(request).db, user.id)
        live = [_row(k) for k in reversed(found) if k.revoked_at is None]
        revoked = [_row(k) for k in reversed(found) if k.revoked_at is not None]
        revoked_id = request.query_params.get("revoked")
        context = {
            "form": form,
            "sorts": keyforms.SORTS,
            "live": live,
            "revoked": revoked,
            "created": created,
            "snippets": quickstart.snippets(_base_url(request), created.secret) if created else [],
            "revoked_name": next((k["name"] for k in revoked if k["id"] == revoked_id), None),
        }
        return self.templates.render(request, "keys/index.html", context, user=user, status_code=status_code)

    # ---- one key: quickstart, edit ------------------------------------------------------------

    async def detail(self, request: Request) -> Response:
        user = await page_user(request)
        key = await self._key(request, user)
        return self._detail(request, user, key, Form(values=keyforms.values_of(key)))

    async def edit(self, request: Request) -> Response:
        user = await page_user(request)
        key = await self._key(request, user)
        form = await read_form(request, keyforms.FIELDS)
        body = validate(form, KeyPatch, keyforms.body_of(form.values, key.settings.routing))
        if body is None:
            return self._detail(request, user, key, form, status_code=400)
        try:
            await keyservice.change_key(services(request), user.id, key.id, body, ip=client_ip(request))
        except InvalidInput as exc:
            form.refuse(exc.message, keyforms.field_of(exc.param))
            return self._detail(request, user, key, form, status_code=400)
        except NotFound as exc:  # revoked meanwhile (in another tab)
            form.refuse(exc.message)
            return self._detail(request, user, key, form, status_code=409)
        return redirect(f"/app/keys/{key.id}?saved=1", request)

    def _detail(self, request: Request, user: PageUser, key: ApiKey, form: Form, status_code: int = 200) -> Response:
        context = {
            "key": _row(key),
            "form": form,
            "sorts": keyforms.SORTS,
            "saved": request.query_params.get("saved") == "1",
            "snippets": quickstart.snippets(_base_url(request), None),
            "env_var": quickstart.ENV_VAR,
        }
        return self.templates.render(request, "keys/detail.html", context, user=user, status_code=status_code)

    # ---- revoking, in two steps ---------------------------------------------------------------

    async def confirm_revoke(self, request: Request) -> Response:
        user = await page_user(request)
        key = await self._key(request, user)
        if key.revoked_at is not None:
            return redirect(f"/app/keys/{key.id}", request)
        return self.templates.render(request, "keys/revoke.html", {"key": _row(key)}, user=user)

    async def revoke(self, request: Request) -> Response:
        user = await page_user(request)
        key = await self._key(request, user)
        await keyservice.revoke_key(services(request), user.id, key.id, ip=client_ip(request))
        return redirect(f"/app/keys?revoked={key.id}", request)

    async def _key(self, request: Request, user: PageUser) -> ApiKey:
        """The user's key named in the path; another user's, or none, is the 404 page."""
        try:
            return await keys_repo.get_key(services(request).db, user.id, request.path_params["key_id"])
        except NotFound:
            raise HTTPException(404) from None

    def routes(self) -> list[Route]:
        return [
            Route("/app/keys", self.index, methods=["GET"]),
            Route("/app/keys", self.create, methods=["POST"]),
            Route("/app/keys/{key_id}", self.detail, methods=["GET"]),
            Route("/app/keys/{key_id}", self.edit, methods=["POST"]),
            Route("/app/keys/{key_id}/revoke", self.confirm_revoke, methods=["GET"]),
            Route("/app/keys/{key_id}/revoke", self.revoke, methods=["POST"]),
        ]
