"""A Ray Data batch job over MTSamples transcriptions (the backlog case): rows in, rows out, throughput.
Prints the job's figures as one JSON line; asserts nothing.

    python bench/batch_job.py [--rows 200] [--replicas 2] [--threads 1] [--max-tokens 96] [--out /tmp/medgpt-batch]

Each row is a transcription to summarize (``brief``) with the gateway's default model; the output folder is
emptied first, so the figures are one whole job.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medgpt import batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("/tmp/medgpt-batch"))
    args = ap.parse_args()
    import ray

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    notes = [json.loads(line) for line in (ROOT / "data" / "notes" / "mtsamples_500.jsonl").open()][
        : args.rows
    ]
    source = args.out / "input.jsonl"
    source.write_text("".join(json.dumps({"id": f"mts-{i}", "text": n["transcription"]}) + "\n"
                              for i, n in enumerate(notes)))  # fmt: skip
    ray.init(num_cpus=args.replicas * args.threads, include_dashboard=False, log_to_driver=False)
    figures = batch.run("summarize", source, args.out / "results", replicas=args.replicas, threads=args.threads,
                        batch_size=args.batch_size, max_tokens=args.max_tokens)  # fmt: skip
    ray.shutdown()
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
