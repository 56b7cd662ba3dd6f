"""P6: whole-case validation inference ÷ bare forward passes over its slices (target ≤ 1.10).

The case is the first validation item of the CPU demo's DataModule (``dunet.yaml`` +
``dunet_demo.yaml``: 64×64 4-slice stacks on a 197×233×189 ATLAS twin scan). Inference is
``SegmentationModule.predict_case`` (forward in chunks of ``slice_batch``, the lesion
probability, and the geometry's mapping of the whole case back to the native 233×197 grid); the reference is
the network's forward over the same chunks of the same network-grid slices. Both run in eval
mode under ``torch.inference_mode`` (as Lightning validates), alternately; the medians are
compared. The ratio depends on the model: the mapping's cost per slice is fixed.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import (
    DUNET_DEMO,
    ONE_X,
    Options,
    Recipe,
    Result,
    Target,
    Workspace,
    median,
    model,
    seconds,
)

MEASURE = "predict_case ÷ bare forward passes (one case)"


def run(workspace: Workspace, options: Options) -> Result:
    repeats = 7 if options.quick else 30
    if not options.small_model:  # D-UNet's forward passes take seconds per case on a CPU
        repeats = 3 if options.quick else 9
    recipe = Recipe(DUNET_DEMO)
    dm = workspace.atlas_module(ONE_X, recipe)
    dm.prepare_data()
    dm.setup("fit")
    dataset = dm.val_dataloader().dataset
    start = time.perf_counter()
    case = dataset[0]
    fetch = time.perf_counter() - start

    torch.manual_seed(0)
    net, net_name = model(recipe, options, in_channels=len(dm.geometry.context))
    module = recipe.module(net, recipe.loss()).eval()
    image, step = case["image"], module.hparams.slice_batch
    slices = image.shape[0]
    chunks = [image[i : i + step] for i in range(0, image.shape[0], step)]

    def bare() -> None:
        for chunk in chunks:
            net(chunk)

    def predict() -> None:
        module.predict_case(case)

    bare_times, predict_times = [], []
    with torch.inference_mode():
        bare()  # warm-up
        predict()
        for _ in range(repeats):
            for arm, times in ((bare, bare_times), (predict, predict_times)):
                start = time.perf_counter()
                arm()
                times.append(time.perf_counter() - start)
        probability = torch.cat([module.lesion_probability(chunk) for chunk in chunks])
        native_hw = case["native_shape"][1:]
        out = module.case_output(image, tuple(case["native_shape"]))  # as predict_case's
        start = time.perf_counter()
        case["geometry"].to_native(
            probability, native_hw, out=out, native_spacing=case["spacing"][1:]
        )
        mapping = time.perf_counter() - start

    bare_time, predict_time = median(bare_times), median(predict_times)
    return Result(
        "P6",
        MEASURE,
        predict_time / bare_time,
        Target("≤", 1.10),
        setup=(
            f"{recipe.label}: {net_name}; case {case['case']}: {slices} slices "
            f"{tuple(image.shape[1:])} → native {tuple(case['native_shape'])}, chunks of "
            f"{step}; median of {repeats} alternating repeats"
        ),
        raw=[
            f"predict_case: {seconds(predict_time)} ({seconds(predict_time / slices)} per slice)",
            f"bare forward passes: {seconds(bare_time)} ({seconds(bare_time / slices)} per slice)",
            f"predict_case adds {seconds((predict_time - bare_time) / slices)} per slice",
        ],
        info=[
            f"of which mapping the probabilities back to the native grid (geometry.to_native): "
            f"{seconds(mapping / slices)} per slice; the rest (lesion probability, concatenating "
            f"the chunks): {seconds((predict_time - bare_time - mapping) / slices)}",
            f"building the case item (CaseDataset[i]: context stacks, native label): "
            f"{seconds(fetch)} for the case, not part of the ratio",
        ],
    )
