"""Validate yandex-tank configs with yandex-tank's own validator, as `yandex-tank -c` does
before a run (its base configs merged in, unknown options rejected).

Runs in the loadtest environment (.venv-loadtest, uv group `loadtest`), not the project's:
    .venv-loadtest/bin/python loadtest/validate.py CONFIG.yaml [CONFIG.yaml ...]
Exit status 1 and the validator's complaints when a config is invalid.
"""

from __future__ import annotations

import sys
import warnings

import yaml

warnings.simplefilter("ignore")  # yandextank's own imports warn about pkg_resources

from yandextank.validator.validator import TankConfig, ValidationError  # noqa: E402


def main(paths: list[str]) -> int:
    invalid = 0
    for path in paths:
        with open(path) as config:
            loaded = yaml.safe_load(config)
        try:
            TankConfig([loaded], skip_base_cfgs=False).validated  # noqa: B018 - validates
        except ValidationError as exc:
            invalid += 1
            print(f"{path}: invalid: {exc.errors}")
        else:
            print(f"{path}: valid")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
