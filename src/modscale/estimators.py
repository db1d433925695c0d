"""scikit-learn estimators over the modular network and the kernel learning rule (PAPER.md claim 3).

The paper's method as an estimator: standardise X, find each module's projection with the kernel learning
rule (:func:`modscale.rules.kernel_projections`, ``projection_init="kernel"``) or draw it at random
(``"random"``), then train every parameter of a :class:`modscale.models.ModularNet`

    f(x) = (1 / sqrt(K)) sum_{i=1..K} f_i(U_i x),   f_i a ReLU MLP (``width``, ``depth``) on R^b,

with Adam (:func:`modscale.training.train`) on the mean squared error of the standardised targets
(:class:`ModularRegressor`) or the cross-entropy of the class logits (:class:`ModularClassifier`).
``transform`` returns each module's input U_i x (of the standardised x), (n, K b).

Randomness: ``random_state`` (an int, a numpy RandomState, or None meaning seed 0: as everywhere in
modscale, no global random state is used) seeds the network's initial weights, the rule and the
minibatches, so a refit with the same ``random_state`` gives the same model on the CPU. Predictions are
computed in float64 (the network trains in float32), so they do not depend on how rows are batched.

Example::

    from modscale.estimators import ModularRegressor
    est = ModularRegressor(n_modules=4, module_dim=1, random_state=0).fit(X_train, y_train)
    est.score(X_test, y_test)          # R^2
    est.transform(X_test).shape        # (n_test, 4): what each module sees
"""

from __future__ import annotations

import numbers
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from modscale._checks import check_choice, check_int, check_positive_number
from modscale.errors import InvalidType, InvalidValue
from modscale.models import ModularNet
from modscale.rules import STRATEGIES, kernel_projections
from modscale.rules.kernels import KERNELS, ntk
from modscale.training import train

PROJECTION_INITS = ("kernel", "random")


def _seed(random_state) -> int:
    """An int seed from ``random_state``: an int >= 0, a numpy RandomState / Generator, or None (seed 0)."""
    if random_state is None:
        return 0
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise InvalidValue(f"random_state must be >= 0, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    raise InvalidType(f"random_state must be None, an int or a numpy RandomState, got {random_state!r}")


def _module_fn(layers, z: torch.Tensor) -> torch.Tensor:
    """One module MLP of a ModularNet as a pure function of its weights [(W (fan_in, fan_out), c), ...]."""
    h = z
    for i, (W, c) in enumerate(layers):
        h = h @ W + c
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def _module_tangent_kernel(net: ModularNet):
    """The tangent kernel of the network's first module at its current (initial) weights: the reviewers'
    reading of the paper's rule (PAPER.md claim 3), k(z, z') = <d f_1(z)/d theta, d f_1(z')/d theta>."""
    layers = [
        (W[0, 0].detach().clone(), c[0, 0].detach().clone())
        for W, c in zip(net.weights, net.biases, strict=True)
    ]
    return partial(ntk, fn=_module_fn, params=layers)


class _ModularEstimator(BaseEstimator):
    """Shared parameters, validation and the private solver of the two estimators."""

    def __init__(
        self,
        n_modules: int = 4,
        module_dim: int = 1,
        projection_init: str = "kernel",
        kernel: str = "rbf",
        strategy: str = "deflation",
        width: int = 32,
        depth: int = 2,
        max_steps: int = 1000,
        lr: float = 3e-3,
        batch_size: int = 128,
        kernel_steps: int = 100,
        kernel_batch_size: int = 512,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        device: str = "auto",
        random_state=None,
    ):
        self.n_modules = n_modules
        self.module_dim = module_dim
        self.projection_init = projection_init
        self.kernel = kernel
        self.strategy = strategy
        self.width = width
        self.depth = depth
        self.max_steps = max_steps
        self.lr = lr
        self.batch_size = batch_size
        self.kernel_steps = kernel_steps
        self.kernel_batch_size = kernel_batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state

    # validation ---------------------------------------------------------------------------------------------
    def _check_params(self, n_features: int) -> None:
        check_int("n_modules", self.n_modules, low=1)
        b = check_int("module_dim", self.module_dim, low=1)
        if b > n_features:
            raise InvalidValue(f"module_dim must be <= the number of features ({n_features}), got {b}")
        check_choice("projection_init", self.projection_init, PROJECTION_INITS)
        check_choice("kernel", self.kernel, tuple(KERNELS))
        check_choice("strategy", self.strategy, STRATEGIES)
        check_int("width", self.width, low=1)
        check_int("depth", self.depth, low=1)
        check_int("max_steps", self.max_steps, low=1)
        check_positive_number("lr", self.lr)
        check_int("batch_size", self.batch_size, low=1)
        check_int("kernel_steps", self.kernel_steps, low=1)
        check_int("kernel_batch_size", self.kernel_batch_size, low=2)
        if not isinstance(self.early_stopping, bool | np.bool_):
            raise InvalidType(f"early_stopping must be a bool, got {self.early_stopping!r}")
        frac = self.validation_fraction
        if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not 0 < frac < 1:
            raise InvalidValue(f"validation_fraction must lie in (0, 1), got {frac!r}")
        if not isinstance(self.device, str | torch.device):
            raise InvalidType(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {self.device!r}")

    def _validate_X(self, X, y="no_validation", reset: bool = False):
        try:
            if isinstance(y, str) and y == "no_validation":  # predict/transform: X only
                return validate_data(self, X, reset=reset, dtype=np.float64)
            return validate_data(
                self, X, y, reset=reset, dtype=np.float64, multi_output=True, y_numeric=False
            )
        except ValueError as err:  # one error type for bad input across modscale (a ValueError still)
            raise InvalidValue(str(err)) from err

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        return torch.tensor((X - self.x_mean_) / self.x_scale_, dtype=torch.float64)

    # the private solver -------------------------------------------------------------------------------------
    def _fit_network(self, X: np.ndarray, T: torch.Tensor, rule_target: torch.Tensor, out_dim: int, loss):
        """Standardise X, find or draw the projections, train the network; sets the fitted attributes.

        T: training targets in the trainer's layout (n, q); rule_target: (n, c) float targets of the rule.
        """
        n, m = X.shape
        if n < 2:
            raise InvalidValue(f"n_samples = {n}: fitting needs at least 2 samples")
        self._check_params(m)
        seed = _seed(self.random_state)
        K, b = int(self.n_modules), int(self.module_dim)
        self.x_mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.x_scale_ = np.where(scale > 0, scale, 1.0)
        Xs = self._standardise(X).to(torch.float32)  # (n, m)

        # validation split for early stopping (a seeded permutation, numpy: no torch global state)
        perm = np.random.default_rng(seed + 3).permutation(n)
        n_val = int(round(self.validation_fraction * n)) if self.early_stopping else 0
        n_val = min(max(n_val, 1), n - 2) if self.early_stopping else 0
        if self.early_stopping and n_val < 1:
            raise InvalidValue(f"early_stopping needs at least 3 samples, got n_samples = {n}")
        fit_rows, val_rows = torch.as_tensor(perm[n_val:]), torch.as_tensor(perm[:n_val])

        net = ModularNet(m, K, b, int(self.width), int(self.depth), out_dim=out_dim, generator=seed)
        if self.projection_init == "kernel":
            kernel = _module_tangent_kernel(net) if self.kernel == "ntk" else self.kernel
            n_fit = int(fit_rows.numel())
            U = kernel_projections(
                Xs[fit_rows], rule_target[fit_rows], K, b, kernel, self.strategy,
                steps=int(self.kernel_steps), batch_size=min(int(self.kernel_batch_size), n_fit),
                generator=seed + 1, device=self.device, progress=False,
            )  # fmt: skip
            net.set_projections(U.cpu())
        self.initial_projections_ = net.projections[0].clone()  # (K, b, m)

        batch = int(self.batch_size)
        val = (Xs[val_rows], T[val_rows]) if n_val else None
        self.history_ = train(
            net, (Xs[fit_rows], T[fit_rows]), steps=int(self.max_steps), lr=float(self.lr),
            batch_size=batch if batch < fit_rows.numel() else None, loss=loss, device=self.device,
            generator=seed + 2, val=val, early_stopping=bool(self.early_stopping),
        )  # fmt: skip
        self.model_ = net.double().eval()  # predictions in float64: independent of how rows are batched
        self.projections_ = self.model_.projections[0].float().cpu()  # (K, b, m), trained
        return self

    def _outputs(self, X) -> torch.Tensor:
        """The network's outputs on validated X, (n, out_dim) float64 on the CPU."""
        check_is_fitted(self, "model_")
        X = self._validate_X(X)
        dev = next(self.model_.parameters()).device
        with torch.no_grad():
            return self.model_(self._standardise(X).to(dev)).cpu()

    def transform(self, X) -> np.ndarray:
        """Each module's input U_i x of the standardised x, concatenated: (n, n_modules * module_dim)."""
        check_is_fitted(self, "model_")
        X = self._validate_X(X)
        dev = next(self.model_.parameters()).device
        with torch.no_grad():
            Z = self.model_.module_inputs(self._standardise(X).to(dev))[0]  # (K, n, b)
        return Z.permute(1, 0, 2).reshape(X.shape[0], -1).cpu().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class ModularRegressor(RegressorMixin, TransformerMixin, _ModularEstimator):
    """Kernel-initialised modular network for regression (module docstring); multi-output allowed.

    Parameters
    ----------
    n_modules, module_dim : K modules, each reading b = module_dim directions of the standardised input.
    projection_init : "kernel" (the learning rule) or "random" (random unit directions).
    kernel, strategy : the rule's kernel ("rbf", "laplace", "arccos", "ntk": the tangent kernel of the
        network's own first module at its initial weights) and strategy ("deflation", "independent").
    width, depth : every module's MLP. max_steps, lr, batch_size : Adam training of the network.
    kernel_steps, kernel_batch_size : the rule's Adam steps per module and minibatch (capped at n).
    early_stopping, validation_fraction : keep the weights with the best loss on a held-out fraction.
    device : "auto" (CUDA when available), "cpu", "cuda". random_state : int, RandomState or None (seed 0).

    Attributes: model_ (the trained ModularNet, float64), projections_ (K, b, n_features) after training,
    initial_projections_ (from the rule or random), history_ (the trainer's History), x_mean_, x_scale_,
    y_mean_, y_scale_, n_features_in_.
    """

    def fit(self, X, y):
        X, y = self._validate_X(X, y, reset=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        Y = y.reshape(len(y), -1)
        self.y_mean_ = Y.mean(axis=0)
        scale = Y.std(axis=0)
        self.y_scale_ = np.where(scale > 0, scale, 1.0)
        T = torch.tensor((Y - self.y_mean_) / self.y_scale_, dtype=torch.float32)  # (n, c)
        return self._fit_network(X, T, T, Y.shape[1], "mse")

    def predict(self, X) -> np.ndarray:
        """Predicted targets, (n,) when fitted on a 1-d y, else (n, c)."""
        out = self._outputs(X).numpy() * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _cross_entropy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of logits pred (S, B, C) against class indices y (S, B, 1) -> (S, B)."""
    S, B, C = pred.shape
    return F.cross_entropy(pred.reshape(S * B, C), y.reshape(S * B), reduction="none").reshape(S, B)


class ModularClassifier(ClassifierMixin, TransformerMixin, _ModularEstimator):
    """Kernel-initialised modular network for classification: one logit per class, summed over modules.

    Parameters as :class:`ModularRegressor`; the rule's targets are the one-hot class indicators. Needs at
    least two classes. Attributes: classes_ and those of the regressor but y_mean_ / y_scale_.
    """

    def fit(self, X, y):
        X, y = self._validate_X(X, y, reset=True)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        C = len(self.classes_)
        if C < 2:
            raise InvalidValue(f"y has 1 class ({self.classes_[0]!r}); a classifier needs at least 2 classes")
        codes = torch.as_tensor(codes.reshape(-1), dtype=torch.long)
        T = codes.unsqueeze(1)  # (n, 1) class indices for the trainer
        onehot = F.one_hot(codes, C).to(torch.float32)  # (n, C): the rule's targets
        return self._fit_network(X, T, onehot, C, _cross_entropy)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), (n, n_classes), columns in the order of classes_."""
        return torch.softmax(self._outputs(X), dim=-1).numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        """Log class probabilities (log-softmax of the logits, stable where probabilities underflow),
        (n, n_classes), columns in the order of classes_."""
        return torch.log_softmax(self._outputs(X), dim=-1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of every row, labels from classes_."""
        codes = self._outputs(X).argmax(dim=-1).numpy()
        return self.classes_[codes]


__all__ = ["ModularRegressor", "ModularClassifier", "PROJECTION_INITS"]
