"""Accuracy of the trained digits classifier on the held-out test set (pure Python).

Reads the weights from $AICERT_WEIGHTS/weights.json and the test set from
$AICERT_INPUTS/digits-test; writes {"accuracy": ..., "samples": ...} to $AICERT_RESULTS.
"""

import csv
import json
import os
from operator import mul


def main():
    with open(os.path.join(os.environ["AICERT_WEIGHTS"], "weights.json")) as f:
        weights = json.load(f)["weights"]
    with open(os.path.join(os.environ["AICERT_INPUTS"], "digits-test"), newline="") as f:
        rows = list(csv.reader(f))[1:]
    correct = 0
    for row in rows:
        x = [float(v) / 16.0 for v in row[:-1]] + [1.0]
        scores = [sum(map(mul, w, x)) for w in weights]
        correct += scores.index(max(scores)) == int(row[-1])
    accuracy = correct / len(rows)
    print(f"test accuracy {accuracy:.4f} on {len(rows)} samples", flush=True)
    with open(os.environ["AICERT_RESULTS"], "w") as f:
        json.dump({"accuracy": round(accuracy, 4), "samples": len(rows)}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
