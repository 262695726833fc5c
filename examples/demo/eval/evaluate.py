"""Accuracy of the trained digits classifier on the held-out test set.

Reads the weights from $AICERT_WEIGHTS and the test set from $AICERT_INPUTS/digits-test,
writes {"accuracy": ..., "samples": ...} to $AICERT_RESULTS.
"""

import json
import os

import numpy as np


def main():
    weights_dir = os.environ["AICERT_WEIGHTS"]
    weights = np.load(os.path.join(weights_dir, "weights.npy"))
    bias = np.load(os.path.join(weights_dir, "bias.npy"))
    table = np.loadtxt(
        os.path.join(os.environ["AICERT_INPUTS"], "digits-test"), delimiter=",", skiprows=1
    )
    features, labels = table[:, :-1] / 16.0, table[:, -1].astype(int)
    predicted = (features @ weights + bias).argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    print(f"test accuracy {accuracy:.4f} on {len(labels)} samples", flush=True)
    with open(os.environ["AICERT_RESULTS"], "w") as f:
        json.dump({"accuracy": round(accuracy, 4), "samples": len(labels)}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
