"""Accuracy of the trained digits network on the held-out test set (numpy).

Reads the weights from $AICERT_WEIGHTS/mlp.npz (code-mlp/train.py's arrays) and the test
set from $AICERT_INPUTS/digits-test; writes {"accuracy": ..., "samples": ...} to
$AICERT_RESULTS.
"""

import json
import os

import numpy as np


def main():
    with np.load(os.path.join(os.environ["AICERT_WEIGHTS"], "mlp.npz"), allow_pickle=False) as w:
        layers = sum(name.startswith("coef_") for name in w.files)
        params = [(w[f"coef_{i}"], w[f"intercept_{i}"]) for i in range(layers)]
    data = np.loadtxt(
        os.path.join(os.environ["AICERT_INPUTS"], "digits-test"), delimiter=",", skiprows=1
    )
    x, y = data[:, :-1] / 16.0, data[:, -1].astype(np.int64)
    for i, (coef, intercept) in enumerate(params):
        x = x @ coef + intercept
        if i < layers - 1:
            x = np.maximum(x, 0.0)  # scikit-learn's default activation, relu
    accuracy = float((x.argmax(axis=1) == y).mean())
    print(f"test accuracy {accuracy:.4f} on {len(y)} samples", flush=True)
    with open(os.environ["AICERT_RESULTS"], "w") as f:
        json.dump({"accuracy": round(accuracy, 4), "samples": len(y)}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
