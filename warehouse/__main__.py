"""`python -m warehouse upgrade`: migrate the warehouse at DATABASE_URL to the newest schema."""

import argparse

from common.settings import get_settings
from warehouse.store import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m warehouse", description=__doc__)
    parser.add_argument("command", choices=["upgrade"], help="upgrade: apply Alembic migrations up to head")
    parser.parse_args()
    Warehouse(get_settings().database_url).upgrade()


if __name__ == "__main__":
    main()
