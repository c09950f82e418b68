"""The ``gptq`` command line (also ``python -m gptq``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gptq", description="GPTQ quantization and inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_env = sub.add_parser("env", help="print versions, CUDA, GPUs and the compiled kernel families")
    p_env.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    if args.command == "env":
        import gptq

        if args.json:
            import json

            from gptq.env import collect

            print(json.dumps(collect(), indent=2))
        else:
            gptq.env()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
