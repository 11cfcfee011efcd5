import torch
import torch.nn.functional as F

from lst.methods.meta_module import WeightGenerator, train_generator


def _clusters(num_classes=10, dim=16, per_class=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(num_classes, dim, generator=generator), dim=1)
    features = {c: centers[c] + 0.15 * torch.randn(per_class, dim, generator=generator) for c in range(num_classes)}
    return centers, features


def test_starts_as_mean_of_shots_plus_attention_readout():
    generator = WeightGenerator(4)
    shots = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]])
    old = torch.eye(4)[2:]
    row = generator([shots], old)[0]
    # identity layers: mean of normalised shots + mean attention over the old rows
    attention = torch.softmax(10 * F.normalize(shots, dim=1) @ old.t(), dim=1)
    expected = F.normalize(shots, dim=1).mean(0) + (attention @ old).mean(0)
    torch.testing.assert_close(row, expected)


def test_episodic_training_learns_to_generate_usable_weights():
    torch.manual_seed(0)
    centers, features = _clusters()
    weights = {c: centers[c] for c in range(8)}  # classes 8, 9 are never seen in training
    generator = WeightGenerator(16)
    losses = train_generator(generator, {c: features[c] for c in range(8)}, weights, episodes=150,
                             novel_per_episode=2, shots=5, queries=10, lr=0.01)  # fmt: skip
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
    # held-out classes: weights from 5 shots classify their other instances among all ten classes
    with torch.no_grad():
        new = generator([features[8][:5], features[9][:5]], torch.stack([weights[c] for c in range(8)]))
        classifier = F.normalize(torch.cat([torch.stack([weights[c] for c in range(8)]), new]), dim=1)
        queries = torch.cat([features[8][5:], features[9][5:]])
        predicted = (F.normalize(queries, dim=1) @ classifier.t()).argmax(1)
    truth = torch.tensor([8] * 25 + [9] * 25)
    assert (predicted == truth).float().mean() > 0.9
