#!/usr/bin/env python3
"""Writes crates/proxima/tests/data/minilm_reference.json: sentences, the word pieces
sentence-transformers feeds all-MiniLM-L6-v2 for each, and the vectors it makes of them. The
`local` provider's tests compare their own vectors with these.

Run it with sentence-transformers (and torch) installed, in a throwaway virtualenv:

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install torch sentence-transformers
    /tmp/st-venv/bin/python scripts/minilm-reference.py [MODEL_DIR]

MODEL_DIR defaults to $PROXIMA_MINILM_DIR, else models/all-minilm-l6-v2 (scripts/fetch-minilm).
"""

import json
import os
import sys
from pathlib import Path

from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/proxima/tests/data/minilm_reference.json"

LONG = " ".join(
    f"Section {i}: the gateway retries a failed upstream call on another target, records the "
    f"latency, and settles the budget of team number {i * 7} before it answers."
    for i in range(1, 16)
)

SENTENCES = [
    "Hello, world!",
    "How do I reset my password?",
    LONG,
    "Der Bär läuft über die Straße zum Café; 東京タワーは高い。 naïve façade 🚀",
    'fn main() { let v: Vec<u32> = (0..10).map(|x| x * 2).collect(); println!("{v:?}"); }',
]


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "PROXIMA_MINILM_DIR", str(ROOT / "models/all-minilm-l6-v2")
    )
    model = SentenceTransformer(model_dir, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    untruncated = len(model.tokenizer(LONG)["input_ids"])
    assert untruncated > 256, f"the long sentence has only {untruncated} word pieces"
    tokens = [int(n) for n in model.tokenize(SENTENCES)["attention_mask"].sum(dim=1)]
    vectors = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "model": "sentence-transformers/all-MiniLM-L6-v2",
                "made_by": "scripts/minilm-reference.py",
                "sentences": [
                    {"text": s, "tokens": n, "vector": [float(x) for x in v]}
                    for s, n, v in zip(SENTENCES, tokens, vectors)
                ],
            },
            ensure_ascii=False,
        )
        + "\n"
    )
    print(f"wrote {OUT} ({len(SENTENCES)} sentences, {untruncated} word pieces in the long one)")


if __name__ == "__main__":
    main()
