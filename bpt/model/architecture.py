"""Declarative networks: a CNN described as data (TOML, JSON or YAML), built by the workers.

A user's own CNN must reach every worker without code travelling in the job. So a network
is a list of layers from an allow-list of `torch.nn` modules, each with typed, checked
arguments; the job carries the list as canonical JSON and every worker builds the same
modules from it. Input sizes are inferred (Conv2d takes only `out_channels`, Linear only
`out_features`), by running a one-sample tensor through the layers as they are built: so a
shape that does not fit fails at submit with the layer's position and type in the message.

    [[layers]]
    type = "Conv2d"
    out_channels = 16
    kernel_size = 3
    padding = 1

`Residual` adds a sub-sequence to its input (`layers`), through an optional `projection`
sub-sequence where the shapes differ. `Linear`'s `out_features` may be "classes".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bpt.errors import ConfigError

MAX_LAYERS = 2000  # all layers, nested ones included
MAX_DEPTH = 6  # Residual inside Residual ...
MAX_WIDTH = 16_384  # channels or features of one layer
MAX_PARAMETERS = 200_000_000  # 800 MB of float32: far past what one Redis value holds anyway
CLASSES = "classes"


@dataclass(frozen=True)
class Arg:
    kind: str  # "int", "pair" (int or [int, int]), "float", "bool", "width" (int or "classes")
    required: bool = False
    default: Any = None
    low: float | None = None  # inclusive
    high: float | None = None  # exclusive for floats, inclusive for ints


def _size(required=False, default=None, low=1):
    return Arg("pair", required, default, low, 1024)


LAYERS: dict[str, dict[str, Arg]] = {
    "Conv2d": {"out_channels": Arg("int", True, low=1, high=MAX_WIDTH), "kernel_size": _size(True),
               "stride": _size(default=1), "padding": _size(default=0, low=0), "dilation": _size(default=1),
               "groups": Arg("int", default=1, low=1, high=MAX_WIDTH), "bias": Arg("bool", default=True)},
    "BatchNorm2d": {"eps": Arg("float", default=1e-5, low=0, high=1), "momentum": Arg("float", default=0.1, low=0, high=1)},
    "GroupNorm": {"num_groups": Arg("int", True, low=1, high=MAX_WIDTH), "eps": Arg("float", default=1e-5, low=0, high=1)},
    "ReLU": {}, "GELU": {}, "SiLU": {}, "Tanh": {}, "Sigmoid": {}, "Identity": {}, "Flatten": {},
    "LeakyReLU": {"negative_slope": Arg("float", default=0.01, low=0, high=1)},
    "MaxPool2d": {"kernel_size": _size(True), "stride": _size(), "padding": _size(default=0, low=0)},
    "AvgPool2d": {"kernel_size": _size(True), "stride": _size(), "padding": _size(default=0, low=0)},
    "AdaptiveAvgPool2d": {"output_size": _size(True)},
    "Dropout": {"p": Arg("float", default=0.5, low=0, high=1)},
    "Dropout2d": {"p": Arg("float", default=0.5, low=0, high=1)},
    "Linear": {"out_features": Arg("width", True, low=1, high=MAX_WIDTH), "bias": Arg("bool", default=True)},
    "Residual": {},  # takes `layers` and `projection`, checked by _parse_layers
}


def load_file(path: str) -> dict:
    """The network description in a .toml, .json, .yaml or .yml file, as plain data."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read model file {path}: {e.strerror}") from e
    try:
        if path.endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        elif path.endswith(".json"):
            data = json.loads(raw)
        elif path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(raw)  # safe_load: plain data only, never Python objects
        else:
            raise ConfigError(f"model file {path}: use .toml, .json or .yaml")
    except ConfigError:
        raise
    except Exception as e:  # a syntax error of any of the three formats
        raise ConfigError(f"model file {path} is not valid: {first_line(e)}") from e
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise ConfigError(f"model file {path}: needs a list `layers` (see examples/models/)")
    return data


def canonical(description: dict) -> str:
    """The checked description as canonical JSON: what travels in the job spec."""
    extra = sorted(set(description) - {"layers", "name", "description"})
    if extra:
        raise ConfigError(f"model description: unknown key(s) {', '.join(extra)}; expected layers, name, description")
    layers = parse(description["layers"])
    return json.dumps(layers, sort_keys=True, separators=(",", ":"))


def parse(layers: Any, where: str = "layers", depth: int = 0, count: list | None = None) -> list[dict]:
    """Check a layer list against the allow-list; return it with defaults filled in. Errors
    name the layer by its path (layers[3].layers[1]) and type."""
    count = count if count is not None else [0]
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: residual blocks nest deeper than {MAX_DEPTH}")
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{where}: must be a non-empty list of layers")
    checked = []
    for i, layer in enumerate(layers):
        at = f"{where}[{i}]"
        count[0] += 1
        if count[0] > MAX_LAYERS:
            raise ConfigError(f"the network has more than {MAX_LAYERS} layers")
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str) \
                or not all(isinstance(k, str) for k in layer):
            raise ConfigError(f"{at}: a layer is a table of named arguments with a string `type`")
        kind = layer["type"]
        if kind not in LAYERS:
            raise ConfigError(f"{at}: layer type {kind!r} is not allowed; use one of {', '.join(sorted(LAYERS))}")
        if kind == "Residual":
            extra = sorted(set(layer) - {"type", "layers", "projection"})
            if extra:
                raise ConfigError(f"{at} (Residual): unknown argument(s) {', '.join(extra)}; takes layers, projection")
            block = {"type": kind, "layers": parse(layer.get("layers"), f"{at}.layers", depth + 1, count)}
            if layer.get("projection") is not None:
                block["projection"] = parse(layer["projection"], f"{at}.projection", depth + 1, count)
            checked.append(block)
            continue
        spec = LAYERS[kind]
        extra = sorted(set(layer) - set(spec) - {"type"})
        if extra:
            takes = ", ".join(spec) or "no arguments"
            raise ConfigError(f"{at} ({kind}): unknown argument(s) {', '.join(extra)}; takes {takes}")
        out = {"type": kind}
        for name, arg in spec.items():
            if name not in layer:
                if arg.required:
                    raise ConfigError(f"{at} ({kind}): missing argument {name}")
                if arg.default is not None:
                    out[name] = arg.default
                continue
            out[name] = _check(layer[name], arg, f"{at} ({kind}) {name}")
        checked.append(out)
    return checked


def _check(value, arg: Arg, where: str):
    def whole(v):
        if type(v) is not int or (arg.low is not None and v < arg.low) or (arg.high is not None and v > arg.high):
            raise ConfigError(f"{where}: must be an integer in [{arg.low}, {arg.high}], got {v!r}")
        return v

    if arg.kind == "int":
        return whole(value)
    if arg.kind == "width":
        return CLASSES if value == CLASSES else whole(value)
    if arg.kind == "pair":
        if isinstance(value, list):
            if len(value) != 2:
                raise ConfigError(f"{where}: must be an integer or a pair of integers, got {value!r}")
            return [whole(v) for v in value]
        return whole(value)
    if arg.kind == "bool":
        if type(value) is not bool:
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if type(value) not in (int, float) or not (arg.low <= value < arg.high):
        raise ConfigError(f"{where}: must be a number in [{arg.low}, {arg.high}), got {value!r}")
    return float(value)


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class Residual(nn.Module):
    """x + body(x), or projection(x) + body(x) where the body changes the shape."""

    def __init__(self, body: nn.Sequential, projection: nn.Module):
        super().__init__()
        self.body = body
        self.projection = projection

    def forward(self, x):
        return self.projection(x) + self.body(x)


def build(layers_json: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Build the network for inputs of shape (C, H, W). Raises ConfigError naming the layer
    whose input does not fit it."""
    layers = parse(json.loads(layers_json))
    probe = torch.zeros((1, *input_shape))
    with torch.no_grad():
        net, _ = _build_sequence(layers, probe, num_classes, "layers")
    parameters = sum(p.numel() for p in net.parameters())
    if parameters > MAX_PARAMETERS:
        raise ConfigError(f"the network has {parameters:,} parameters, over the limit of {MAX_PARAMETERS:,}")
    return net


def _build_sequence(layers: list[dict], x: torch.Tensor, num_classes: int, where: str):
    modules = []
    for i, layer in enumerate(layers):
        at = f"{where}[{i}] ({layer['type']})"
        module = _module(layer, x, num_classes, f"{where}[{i}]")
        try:
            x = module.eval()(x)  # eval: a probe must not move BatchNorm's running statistics
            module.train()
        except RuntimeError as e:
            raise ConfigError(f"{at}: does not fit its input of shape {tuple(x.shape[1:])}: "
                              f"{first_line(e)}") from e
        modules.append(module)
    return nn.Sequential(*modules), x


def _parameters_of(kind: str, args: dict, x: torch.Tensor, num_classes: int) -> int:
    """A layer's parameter count, computed before it is built: one allowed Conv2d could
    otherwise allocate terabytes before the total is checked."""
    def pair(v):
        return v if isinstance(v, tuple) else (v, v)

    if kind == "Conv2d":
        kh, kw = pair(args["kernel_size"])
        return int(x.shape[1]) * args["out_channels"] * kh * kw // args["groups"] + args["out_channels"]
    if kind == "Linear" and x.dim() == 2:
        out = num_classes if args["out_features"] == CLASSES else args["out_features"]
        return int(x.shape[1]) * out + out
    return 0


def _module(layer: dict, x: torch.Tensor, num_classes: int, where: str) -> nn.Module:
    kind = layer["type"]
    args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in layer.items() if k != "type"}
    if kind == "Residual":
        body, out = _build_sequence(layer["layers"], x, num_classes, f"{where}.layers")
        projection, skip = nn.Identity(), x
        if "projection" in layer:
            projection, skip = _build_sequence(layer["projection"], x, num_classes, f"{where}.projection")
        if skip.shape != out.shape:
            hint = "" if "projection" in layer else "; add a projection"
            raise ConfigError(f"{where} (Residual): its layers give shape {tuple(out.shape[1:])} but the skip path "
                              f"gives {tuple(skip.shape[1:])}{hint}")
        return Residual(body, projection)
    parameters = _parameters_of(kind, args, x, num_classes)
    if parameters > MAX_PARAMETERS:
        raise ConfigError(f"{where} ({kind}): {parameters:,} parameters, over the limit of {MAX_PARAMETERS:,}")
    image = x.dim() == 4
    if kind in ("Conv2d", "BatchNorm2d", "GroupNorm") and not image:
        raise ConfigError(f"{where} ({kind}): needs an image input (C, H, W), got shape {tuple(x.shape[1:])}; "
                          "put it before Flatten")
    if kind == "Conv2d":
        if x.shape[1] % args["groups"] or args["out_channels"] % args["groups"]:
            raise ConfigError(f"{where} (Conv2d): groups {args['groups']} must divide its {x.shape[1]} input "
                              f"and {args['out_channels']} output channels")
        return nn.Conv2d(int(x.shape[1]), **args)
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(int(x.shape[1]), **args)
    if kind == "GroupNorm":
        if x.shape[1] % args["num_groups"]:
            raise ConfigError(f"{where} (GroupNorm): {args['num_groups']} groups do not divide {x.shape[1]} channels")
        return nn.GroupNorm(args["num_groups"], int(x.shape[1]), eps=args["eps"])
    if kind == "Linear":
        if x.dim() != 2:
            raise ConfigError(f"{where} (Linear): needs a flat input, got shape {tuple(x.shape[1:])}; "
                              "put a Flatten before it")
        out = num_classes if args["out_features"] == CLASSES else args["out_features"]
        return nn.Linear(int(x.shape[1]), out, bias=args["bias"])
    return getattr(nn, kind)(**args)
