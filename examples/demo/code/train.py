"""Train a softmax classifier on 8x8 hand-written digits (pure Python, deterministic).

Reads the data set from $AICERT_INPUTS/digits and the hyper-parameters from the job's
[config] ($AICERT_CONFIG); writes the weights to $AICERT_OUTPUT/weights.json.
It needs nothing beyond the image's Python standard library.
"""

import csv
import json
import math
import os
import random
from operator import mul

CLASSES = 10


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[float(v) / 16.0 for v in row[:-1]] + [1.0] for row in rows], [
        int(row[-1]) for row in rows
    ]


def softmax(weights, x):
    logits = [sum(map(mul, w, x)) for w in weights]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def main():
    with open(os.environ["AICERT_CONFIG"]) as f:
        config = json.load(f)
    epochs, rate = int(config["epochs"]), float(config["learning_rate"])
    features, labels = load(os.path.join(os.environ["AICERT_INPUTS"], "digits"))
    weights = [[0.0] * len(features[0]) for _ in range(CLASSES)]  # last column: bias
    order = list(range(len(labels)))
    rng = random.Random(int(config.get("seed", 0)))  # noqa: S311 - data order, not secrets
    for epoch in range(1, epochs + 1):
        rng.shuffle(order)
        loss = correct = 0
        for i in order:
            x, y = features[i], labels[i]
            probs = softmax(weights, x)
            loss -= math.log(probs[y] + 1e-12)
            correct += probs.index(max(probs)) == y
            for k in range(CLASSES):
                step = rate * (probs[k] - (k == y))
                if step:
                    weights[k] = [w - step * v for w, v in zip(weights[k], x, strict=True)]
        print(
            f"epoch {epoch:3d}  loss {loss / len(labels):.4f}  "
            f"train accuracy {correct / len(labels):.4f}",
            flush=True,
        )
    with open(os.path.join(os.environ["AICERT_OUTPUT"], "weights.json"), "w") as f:
        json.dump({"kind": "softmax-regression", "classes": CLASSES, "weights": weights}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
