"""Bad checkpoints give one clear error naming the file, what was expected and the fix; the CLI commands."""

from __future__ import annotations

import pytest
import torch
from hub_peers import hf_mae, hf_to_official
from safetensors.torch import save_file

import maezoo
from maezoo.hub import HubError, import_checkpoint, read_checkpoint

pytest.importorskip("transformers")


@pytest.fixture
def official(tmp_path):
    path = tmp_path / "mae_pretrain_vit_tiny_full.pth"
    torch.save({"model": hf_to_official(hf_mae().state_dict())}, path)
    return path


def test_truncated_pth_and_safetensors(tmp_path, official):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(official.read_bytes()[:5000])
    with pytest.raises(HubError, match=r"cut\.pth.*truncated.*download it again"):
        read_checkpoint(cut)
    st = tmp_path / "cut.safetensors"
    save_file({"w": torch.zeros(1000)}, str(st))
    st.write_bytes(st.read_bytes()[:200])
    with pytest.raises(HubError, match=r"cut\.safetensors.*truncated"):
        read_checkpoint(st)


class _RunsCode:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_pickle_needing_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _RunsCode()}, path)
    with pytest.raises(HubError, match=r"evil\.pth.*needs code execution.*weights_only=True"):
        read_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_unknown_layout_lists_the_expected_ones(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, str(path))
    with pytest.raises(HubError, match=r"other\.safetensors: unknown checkpoint layout[\s\S]*mae_official[\s\S]*timm_vit"):
        import_checkpoint(path)


def test_learned_position_embeddings_are_refused(tmp_path):
    import timm

    sd = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, patch_size=4, embed_dim=64, depth=1,
                           num_heads=4, num_classes=0).state_dict()
    save_file(sd, str(tmp_path / "sup.safetensors"))
    with pytest.raises(HubError, match=r"sup\.safetensors: pos_embed is not MAE's fixed 2-D sin-cos"):
        import_checkpoint(tmp_path / "sup.safetensors")


def test_wrong_size_names_file_and_the_model_that_fits(official):
    with pytest.raises(HubError, match=r"mae_pretrain_vit_tiny_full\.pth: does not fit mae_vit_small_patch16 "
                                       r"\(tokenizer\.proj\.weight: checkpoint \(64, 3, 4, 4\) vs model \(384, 3, 16, 16\)"
                                       r"[\s\S]*embed_dim=64"):
        maezoo.create_model("mae_vit_small_patch16", pretrained=str(official))


def test_state_dict_without_tensors_and_empty_folder(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(HubError, match=r"meta\.pth: no tensors found"):
        read_checkpoint(tmp_path / "meta.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match=r"empty: no weights found; expected one of model\.safetensors"):
        read_checkpoint(tmp_path / "empty")


def test_cli_convert_and_zoo(tmp_path, official, capsys):
    from maezoo.cli import main

    assert main(["convert", str(official), str(tmp_path / "hf"), "--to", "hf", "--num-heads", "4"]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "mz"), "--to", "maezoo"]) == 0
    model = maezoo.engine.checkpoint.load_model(tmp_path / "mz")[0]
    again = import_checkpoint(tmp_path / "hf").state
    assert all(torch.equal(model.state_dict()[k], v) for k, v in again.items())
    assert main(["zoo"]) == 0
    assert "facebook/vit-mae-base" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "nothing.pth"), str(tmp_path / "x")]) == 2
    assert "nothing.pth: no such file" in capsys.readouterr().err
