"""A command line's values two keys below a class (the network inside the module) reach it as
typed: ``null`` as ``None``, not the text "None" (cli/nested_values.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import yaml
from jsonargparse import _typehints

from cli.parse_errors import SuiteArgumentParser
from tests.conftest import configs, run_in_process


class Inner:
    def __init__(self, depth: int | None = 1) -> None:
        self.depth = depth


class Net:
    def __init__(
        self,
        weights: str | None = "w.pth",
        legacy: Optional[str] = "w.pth",  # noqa: UP045 - the spelling under test
        folder: Path | None = Path("w"),
        size: int | None = 3,
        sizes: list[int | None] | None = None,
        extra: dict[str, int | None] | None = None,
        inner: Inner | None = None,
    ) -> None:
        pass


class Module:
    def __init__(self, net: Net, threshold: float | None = 0.5) -> None:
        pass


_MODULE = {
    "class_path": f"{__name__}.Module",
    "init_args": {"net": {"class_path": f"{__name__}.Net"}},
}
_INNER = f"{__name__}.Inner"


def _parse(*override: str) -> dict:
    parser = SuiteArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=Module)
    args = ["--model", yaml.safe_dump(_MODULE), "--model.init_args.net.init_args.inner", _INNER]
    return parser.parse_args([*args, *override]).model.init_args.net.init_args.as_dict()


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("weights", "null", None),
        ("legacy", "null", None),
        ("folder", "null", None),
        ("size", "null", None),
        ("sizes", "[1, null]", [1, None]),
        ("extra", "{a: null, b: 2}", {"a": None, "b": 2}),
        ("weights", "None", "None"),  # a file may be called None
        ("weights", "my weights.pth", "my weights.pth"),
        ("size", "4", 4),
    ],
)
def test_a_nested_value_reaches_the_class_as_typed(key, value, expected):
    from cli.nested_values import AVAILABLE

    assert AVAILABLE, "this jsonargparse lacks adapt_class_type or NestedArg: see the module"
    original = _typehints.adapt_class_type
    assert _parse(f"--model.init_args.net.init_args.{key}", value)[key] == expected
    assert _typehints.adapt_class_type is original  # jsonargparse is left as it was


def test_a_null_three_classes_deep_is_none():
    parsed = _parse("--model.init_args.net.init_args.inner.init_args.depth", "null")
    assert parsed["inner"]["init_args"]["depth"] is None


@pytest.mark.slow
def test_the_lightning_command_hands_a_nested_null_to_the_class(tmp_path):
    # pspnet_focal.yaml's PSPNet reads its weights from a file: a command-line null trains it
    # from scratch (the weights error advises it), as pspnet_scratch_focal.yaml's YAML null does.
    result = run_in_process(
        "lightning",
        "fit",
        *configs("pspnet_focal.yaml", "pspnet_wce.yaml"),
        "--model.init_args.net.init_args.pretrained_weights",
        "null",
        "--model.init_args.loss.init_args.lesion_weight",
        "null",
        "--model.init_args.optimizer.init_args.foreach",
        "null",
        "--data.init_args.augmentation",
        "null",
        "--print_config",
        cwd=tmp_path,
    )
    config = yaml.safe_load(result.stdout)
    model = config["model"]["init_args"]
    assert model["net"]["init_args"]["pretrained_weights"] is None
    assert model["loss"]["init_args"]["lesion_weight"] is None
    assert model["optimizer"]["init_args"]["foreach"] is None
    assert config["data"]["init_args"]["augmentation"] is None
