"""The built-in encoders: one short builder each."""
from __future__ import annotations

from fewshot.encoders import from_file, register
from fewshot.encoders.base import TorchImageEncoder
from fewshot.encoders.preprocess import ImagePreprocess
from fewshot.errors import EncoderError


@register("omniglot-conv4", input_kind="image", dim=64, weights="package data (trained on Omniglot here)",
          description="Conv-4 prototypical-network CNN, 28x28 grayscale; the default image encoder")
def omniglot_conv4(weights: str | None = None) -> TorchImageEncoder:
    from fewshot.encoders.weights import packaged_path

    return from_file(weights or packaged_path("omniglot_conv4.pt"), name="omniglot-conv4")


def _torchvision(arch: str, weights: str | None) -> TorchImageEncoder:
    """ImageNet backbone: weights 'imagenet' (default), 'none' (random) or a local state-dict path."""
    import torch

    from fewshot.encoders.archs import strip_head, torchvision_model
    from fewshot.encoders.weights import imagenet_preprocess_params, imagenet_state_dict, load_weights_file

    model = torchvision_model(arch)
    source = weights or "imagenet"
    if source == "imagenet":
        model.load_state_dict(imagenet_state_dict(arch))
    elif source != "none":
        sd = load_weights_file(source)
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise EncoderError(f"{source} is not a state dict (a mapping of names to tensors)")
        try:  # a full classifier state dict, or one without the head
            model.load_state_dict(sd)
        except RuntimeError:
            try:
                model, _ = strip_head(model)
                model.load_state_dict(sd)
            except RuntimeError as exc:
                raise EncoderError(f"{source} does not fit {arch}: {str(exc).splitlines()[0][:160]}") from None
    if not isinstance(getattr(model, "fc", None) or getattr(model, "classifier", None), torch.nn.Identity):
        model, dim = strip_head(model)
    else:
        dim = {"resnet18": 512, "resnet50": 2048, "mobilenet_v3_small": 576, "efficientnet_b0": 1280}[arch]
    pre = ImagePreprocess(channels=3, resize="crop", invert="never", **imagenet_preprocess_params(arch))
    return TorchImageEncoder(arch, model, dim, pre, arch, weights_source=source)


for _arch, _dim in [("resnet18", 512), ("resnet50", 2048), ("mobilenet_v3_small", 576), ("efficientnet_b0", 1280)]:
    register(_arch, input_kind="image", dim=_dim, weights="torchvision ImageNet (downloaded once, cached)",
             description=f"torchvision {_arch}, pooled penultimate features")(
        lambda weights=None, _a=_arch: _torchvision(_a, weights))
