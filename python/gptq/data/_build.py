"""How the texts in this folder were made (run once by a developer; not used at run time).

Sources: /work/shared/data/text/ of the gptq project (see README.md there):
  sotu_train.txt.gz, austen_train.txt.gz -> calibration.jsonl.gz: 80 passages of ~1600 characters
      from each file, starting at paragraph boundaries chosen with random.Random(1234), in random
      order (calibration only);
  sotu_eval.txt.gz (State of the Union 2001-2021) and austen_eval.txt.gz (Persuasion) -> the first
      96 000 characters of each, cut at the last newline (held-out evaluation only).
"""

import gzip
import json
import random
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/text")
HERE = Path(__file__).resolve().parent
PASSAGES, CHARS, EVAL_CHARS = 80, 1600, 96_000


def passages(text: str, rng: random.Random, n: int) -> list[str]:
    starts = [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 + CHARS < len(text)]
    out = []
    for s in sorted(rng.sample(starts, n)):
        chunk = text[s:s + CHARS]
        out.append(chunk[: chunk.rfind(" ")].strip())
    return out


def main() -> None:
    rng = random.Random(1234)
    rows = []
    for name in ("sotu", "austen"):
        text = gzip.open(SRC / f"{name}_train.txt.gz", "rt", encoding="utf-8").read()
        rows += [{"source": f"{name}_train", "text": p} for p in passages(text, rng, PASSAGES)]
    rng.shuffle(rows)
    with gzip.GzipFile(HERE / "calibration.jsonl.gz", "wb", mtime=0) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    for name, out in (("sotu_eval", "sotu_2001_2021.txt.gz"), ("austen_eval", "persuasion.txt.gz")):
        text = gzip.open(SRC / f"{name}.txt.gz", "rt", encoding="utf-8").read()[:EVAL_CHARS]
        text = text[: text.rfind("\n")] if "\n" in text else text[: text.rfind(" ")]
        with gzip.GzipFile(HERE / out, "wb", mtime=0) as f:
            f.write(text.encode())


if __name__ == "__main__":
    main()
