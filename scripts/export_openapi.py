"""`python -m scripts.export_openapi > oas.yaml`: regenerate the contract from the app.

oas.yaml is the reviewed contract; tests/api/test_contract.py fails when the served
/openapi.json drifts from it, so a change to the API is a change to this file too.
"""

import sys

import yaml

from api.main import create_api
from common.settings import Settings


def main() -> None:
    spec = create_api(Settings(database_url="sqlite://")).openapi()
    yaml.safe_dump(spec, sys.stdout, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    main()
