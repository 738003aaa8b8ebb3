import pytest
import torch
from safetensors.torch import load_file

from toolkit import quant
from toolkit.quant import QuantSpec
from toolkit.quant.storage import pack_tensor, packed_file_bytes, stored_bytes, unpack_tensor


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_pack_unpack_gives_the_fake_quantized_tensor(bits, granularity):
    x = torch.randn(12, 64, generator=torch.Generator().manual_seed(bits))
    spec = QuantSpec(bits=bits, symmetric=bits == 1 or bits % 2 == 0, granularity=granularity,
                     group_size=16 if granularity == "group" else None)
    stored = pack_tensor(x, spec)
    assert stored["codes"].dtype == torch.uint8 and stored["codes"].numel() == -(-x.numel() * bits // 8)
    assert torch.equal(unpack_tensor(stored, spec), quant.fake_quantize(x, spec))
    predicted = stored_bytes(x, spec)
    assert predicted["codes"] == stored["codes"].numel()
    assert predicted["scales"] == stored["scale"].numel() * 4
    assert predicted["zero_points"] == (stored["zero_point"].numel() * 2 if "zero_point" in stored else 0)


def test_packed_file_holds_true_bytes_and_leaves_the_model_alone(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.LayerNorm(128))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = QuantSpec(bits=4, granularity="channel", axis=0)
    size = packed_file_bytes(model, spec, tmp_path / "m.safetensors")
    assert size == (tmp_path / "m.safetensors").stat().st_size
    payload = 256 * 128 // 2 + 128 * 4 + (128 + 128 + 128) * 4  # codes, scales, bias + layer norm
    assert payload < size < payload + 2048
    tensors = load_file(tmp_path / "m.safetensors")
    assert tensors["0.weight.codes"].dtype == torch.uint8 and "0.bias" in tensors
    weight = unpack_tensor({k.split(".")[-1]: v for k, v in tensors.items() if k.startswith("0.weight.")}, spec)
    assert torch.equal(weight, quant.fake_quantize(before["0.weight"], spec))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert packed_file_bytes(model, spec) == size  # temporary file, same bytes


@pytest.mark.parametrize("damage", ["truncate", "not-safetensors"])
def test_loaders_name_a_broken_file(tmp_path, damage):
    from toolkit import prune
    from toolkit.artifacts import UnreadableFileError

    path = tmp_path / "model.safetensors"
    if damage == "truncate":
        from safetensors.torch import save_file

        save_file({"w": torch.randn(64, 64)}, str(path), metadata={"format": "x"})
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("this is a CSV file,\n1,2,3\n")
    for loader in (quant.load_quantized, prune.storage.load_sparse_state_dict):
        with pytest.raises(UnreadableFileError, match=f"{path.name}.*cannot be read as .*truncated, damaged or not a safetensors file"):
            loader(path)


def test_a_packed_file_reads_back_to_what_its_bytes_hold(tmp_path):
    from toolkit.quant import QuantSpec, fake_quantize
    from toolkit.quant.storage import packed_file_bytes, read_packed_file

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.LayerNorm(32))
    spec = QuantSpec(bits=4, granularity="group", group_size=16, symmetric=False)
    path = tmp_path / "packed.safetensors"
    packed_file_bytes(model, spec, path, scale_dtype=torch.float16)
    back = read_packed_file(path, spec)
    assert set(back) == set(model.state_dict())
    weight = model[0].weight.detach()
    assert torch.equal(back["1.weight"], model[1].weight.detach()), "non-matrix tensors come back unchanged"
    in_memory = fake_quantize(weight, spec)
    assert 0 < (back["0.weight"] - in_memory).abs().max() < 1e-2, "float16 scales differ slightly from the in-memory ones"
    with pytest.raises(FileNotFoundError, match="packed_file_bytes"):
        read_packed_file(tmp_path / "missing.safetensors", spec)
