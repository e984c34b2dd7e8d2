"""The rules every route's parameters share, as one app-wide dependency (`create_api` installs it).

- A parameter the route declares as a single value may be given once: `limit=1&limit=5` is
  refused, not read as its last value (what FastAPI does), since the client meant one of them
  and the answer would silently be for the other. A declared list (`list[str]` in a `Query`) is
  repeatable: that is how a route says a name is legitimately given more than once.
- No value of a declared parameter may hold a control character (Unicode Cc: U+0000–U+001F,
  U+007F–U+009F, percent-encoded, since the server refuses them raw): none is meaningful in a
  limit, a datetime or a name, and they end up in logs, details and databases.

Parameters a route does not declare are ignored, as they are everywhere else. The fast path
(api/fastpath.py) answers only query strings FastAPI accepted, so these rules cost it nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request
from fastapi._compat import field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from api.problems import ProblemError

CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Declared:
    """The query parameters a route declares (by the name a client sends), and those given once."""

    query: frozenset[str]
    single: frozenset[str]

    @classmethod
    def of(cls, route: APIRoute) -> Declared:
        dependants, fields = [route.dependant], []
        while dependants:  # the route's own parameters and its dependencies'
            dependant = dependants.pop()
            fields += dependant.query_params
            dependants += dependant.dependencies
        fields = get_flat_params(Dependant(query_params=fields))  # a parameter model counts as its fields
        return cls(
            frozenset(field.alias for field in fields),
            frozenset(field.alias for field in fields if not field_annotation_is_sequence(field.field_info.annotation)),
        )


# id(route) -> (route, what it declares), computed once per route: flattening the parameters costs
# more than the checks themselves. The route is kept beside it, so a reused id never answers for another.
DECLARED: dict[int, tuple[APIRoute, Declared]] = {}


def declared(route: APIRoute) -> Declared:
    kept = DECLARED.get(id(route))
    if kept is None or kept[0] is not route:
        kept = DECLARED[id(route)] = (route, Declared.of(route))
    return kept[1]


def refuse_control_characters(name: str, value: str) -> None:
    if found := CONTROL_CHARACTER.search(value):
        raise ProblemError(
            422,
            "Invalid parameter",
            f"{name}: {value[:64]!r} contains the control character U+{ord(found.group()):04X}",
        )


def unambiguous_parameters(request: Request) -> None:
    """The app-wide dependency: 422 for a declared parameter given twice or holding a control character."""
    rules = declared(request.scope["route"])
    given: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in rules.query:
            continue
        refuse_control_characters(name, value)
        if name in given and name in rules.single:
            raise ProblemError(
                422,
                "Invalid parameter",
                f"{name}: given more than once ({given[name][:32]!r}, {value[:32]!r}); give it once",
            )
        given[name] = value
    for name, value in request.path_params.items():
        if isinstance(value, str):
            refuse_control_characters(name, value)
