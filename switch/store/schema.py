"""SQLAlchemy tables of the switch: one MetaData that every store module registers on."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
