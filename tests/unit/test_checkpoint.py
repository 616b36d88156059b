"""Per-epoch checkpoints: restored only for the same settings."""

import torch

from flukeline.core.checkpoint import resume_training_state, save_training_state


def test_state_round_trips_and_other_settings_start_over(tmp_path):
    path = tmp_path / "m.checkpoint.pt"
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(5)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    expected_draw = torch.randperm(10, generator=torch.Generator().set_state(generator.get_state()))
    save_training_state(
        path, 3, [{"epoch": 3, "loss": 1.0}], "abc", model=model, optimizer=optimizer, generator=generator
    )

    fresh, fresh_opt, fresh_gen = torch.nn.Linear(3, 2), None, torch.Generator()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    epoch, history = resume_training_state(path, "abc", model=fresh, optimizer=fresh_opt, generator=fresh_gen)
    assert epoch == 3 and history == [{"epoch": 3, "loss": 1.0}]
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert torch.equal(torch.randperm(10, generator=fresh_gen), expected_draw)

    other = torch.nn.Linear(3, 2)
    before = other.weight.clone()
    assert resume_training_state(path, "changed", model=other) == (0, [])
    assert torch.equal(other.weight, before)
    assert resume_training_state(tmp_path / "none.pt", "abc", model=other) == (0, [])
