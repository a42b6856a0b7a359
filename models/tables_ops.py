"""Operations: spend per pipeline per day, for daily budgets."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base


class DailySpend(Base):
    __tablename__ = "daily_spend"

    pipeline_name: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    spent_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
