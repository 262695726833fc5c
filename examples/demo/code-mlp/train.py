"""Train a small neural network on 8x8 hand-written digits with scikit-learn (deterministic).

Runs in the demo's environment (examples/demo/environment.toml: Debian's Python 3,
numpy and scikit-learn). Reads the data set from $AICERT_INPUTS/digits and the
hyper-parameters from the job's [config] ($AICERT_CONFIG: epochs, learning_rate, seed,
and optionally hidden, default 64); writes the weights to $AICERT_OUTPUT/mlp.npz (numpy
arrays, no pickle) and the training curve to $AICERT_OUTPUT/training.json.
"""

import json
import os
import warnings

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier


def load(path):
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, :-1] / 16.0, data[:, -1].astype(np.int64)


def main():
    with open(os.environ["AICERT_CONFIG"]) as f:
        config = json.load(f)
    features, labels = load(os.path.join(os.environ["AICERT_INPUTS"], "digits"))
    model = MLPClassifier(
        hidden_layer_sizes=(int(config.get("hidden", 64)),),
        learning_rate_init=float(config["learning_rate"]) / 10,
        max_iter=1,
        warm_start=True,  # one epoch per fit() call, so each epoch is reported
        shuffle=True,
        random_state=int(config.get("seed", 0)),
    )
    curve = []
    for epoch in range(1, int(config["epochs"]) + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features, labels)
        accuracy = float(model.score(features, labels))
        curve.append({"epoch": epoch, "loss": float(model.loss_), "train_accuracy": accuracy})
        print(
            f"epoch {epoch:3d}  loss {model.loss_:.4f}  train accuracy {accuracy:.4f}", flush=True
        )
    output = os.environ["AICERT_OUTPUT"]
    arrays = {f"coef_{i}": c for i, c in enumerate(model.coefs_)}
    arrays.update({f"intercept_{i}": b for i, b in enumerate(model.intercepts_)})
    with open(os.path.join(output, "mlp.npz"), "wb") as f:
        np.savez(f, **arrays)
    with open(os.path.join(output, "training.json"), "w") as f:
        json.dump(
            {
                "framework": f"scikit-learn {sklearn.__version__}",
                "numpy": np.__version__,
                "activation": model.activation,
                "epochs": curve,
            },
            f,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
