"""Reading HTML forms and showing their problems next to the fields.

A form's fields are validated by the API's own body models (`<package>/schemas.py`) and business
rules, so a page refuses exactly what the API refuses, in the same words. `Form` keeps what was
typed (never a password or secret) to fill the fields again, and the problems per field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from aichat_gateway import apibody
from aichat_gateway.dashboard.formcsrf import FIELD as CSRF_FIELD

M = TypeVar("M", bound=BaseModel)

# Never sent back into a page, whatever happens.
SECRET_FIELDS = frozenset({"password", "new_password", "current_password", "api_key"})
GENERAL = ""  # the key of a problem that belongs to no one field


@dataclass
class Form:
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def refuse(self, message: str, param: str | None = None) -> None:
        self.errors.setdefault(param or GENERAL, message)

    def shown(self) -> dict[str, str]:
        """What may go back into the page's fields."""
        return {k: v for k, v in self.values.items() if k not in SECRET_FIELDS}


async def read_form(request: Request, fields: Iterable[str]) -> Form:
    """The named fields of an urlencoded form (missing ones as ''), others ignored."""
    data = await request.form()
    values = {name: str(data.get(name, "")) for name in fields if name != CSRF_FIELD}
    return Form(values=values)


def validate(form: Form, model: type[M], data: dict[str, object] | None = None) -> M | None:
    """`model` from `data` (default: the form's values); on failure every field's problem goes
    into `form.errors` and None is returned."""
    try:
        return model.model_validate(form.values if data is None else data)
    except ValidationError as exc:
        for path, message in apibody.problems(exc, model).items():
            form.refuse(message, path)
        return None
