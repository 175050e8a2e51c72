"""Versioned contracts: every canonical entity and event declares a name, a version and its owning domain.

The JSON Schema of each contract (``ledgerbridge contracts export``) carries these as ``x-contract``,
``x-version`` and ``x-owner``; ``ledgerbridge contracts check`` compares two exports and classifies changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """Base of every canonical contract: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    contract_name: ClassVar[str] = ""
    contract_version: ClassVar[str] = "1.0"
    owner: ClassVar[str] = ""

    @classmethod
    def contract_schema(cls) -> dict[str, Any]:
        """JSON Schema of this contract with its name, version and owner attached."""
        schema = cls.model_json_schema(mode="validation")
        schema["x-contract"] = cls.contract_name
        schema["x-version"] = cls.contract_version
        schema["x-owner"] = cls.owner
        return schema


class SourceRef(BaseModel):
    """Lineage pointer to one version of one source item: ``system:entity:id@version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str
    entity: str
    id: str
    version: int = 1

    @property
    def key(self) -> str:
        return f"{self.system}:{self.entity}:{self.id}:{self.version}"

    def __str__(self) -> str:
        return f"{self.system}:{self.entity}:{self.id}@{self.version}"


def idempotency_key(system: str, entity: str, external_id: str, version: int | str) -> str:
    """The inbound idempotency key of DESIGN §3: ``source system : entity : external id : version``."""
    return f"{system}:{entity}:{external_id}:{version}"
