"""PatchCore at scale: exact blocked nearest-neighbour search, the device coreset and the capped patch store give
the scores of the reference computation."""

from __future__ import annotations

import pytest
import torch
from sectorkit.domains.healthcare.models.knn import greedy_coreset, nearest_distances, squared_distances
from sectorkit.domains.healthcare.models.padim import PaDiMDetector
from sectorkit.domains.healthcare.models.patchcore import PatchCoreDetector


def _reference_coreset(x: torch.Tensor, size: int, seed: int = 0, projection: int = 64, max_candidates: int = 40000) -> torch.Tensor:
    """The greedy k-centre coreset as first written (CPU, whole projection at once)."""
    if size >= len(x):
        return torch.arange(len(x))
    g = torch.Generator().manual_seed(seed)
    if len(x) > max_candidates:
        subset = torch.randperm(len(x), generator=g)[:max_candidates]
        return subset[_reference_coreset(x[subset], size, seed, projection, max_candidates)]
    proj = (x @ (torch.randn(x.shape[1], projection, generator=g) / projection**0.5) if x.shape[1] > projection else x).contiguous()
    norms = proj.pow(2).sum(1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(len(x), (1,), generator=g))
    dist = norms - 2 * proj @ proj[chosen[0]] + norms[chosen[0]]
    for i in range(1, size):
        chosen[i] = dist.argmax()
        dist = torch.minimum(dist, norms - 2 * proj @ proj[chosen[i]] + norms[chosen[i]])
    return chosen


@pytest.mark.parametrize("query_chunk,bank_chunk", [(4096, 16384), (7, 5), (100, 33)])
def test_blocked_search_is_exact(query_chunk, bank_chunk):
    g = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(257, 24, generator=g), torch.randn(91, 24, generator=g)
    expected = squared_distances(queries, bank).min(dim=1).values
    torch.testing.assert_close(nearest_distances(queries, bank, query_chunk, bank_chunk), expected, rtol=1e-5, atol=1e-5)
    brute = torch.cdist(queries.double(), bank.double()).pow(2).min(dim=1).values.float()
    torch.testing.assert_close(nearest_distances(queries, bank, query_chunk, bank_chunk), brute, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,dims,candidates", [(500, 96, 40000), (700, 32, 300)])
def test_coreset_selects_what_the_reference_selects(n, dims, candidates):
    x = torch.randn(n, dims, generator=torch.Generator().manual_seed(1))
    chosen = greedy_coreset(x, 40, seed=3, max_candidates=candidates)
    assert torch.equal(chosen, _reference_coreset(x, 40, seed=3, max_candidates=candidates))
    assert len(set(chosen.tolist())) == 40


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _fitted(**kwargs) -> PatchCoreDetector:
    net = PatchCoreDetector(image_size=32, coreset_size=64, **kwargs).eval()
    for part in _images(12, 0).split(4):
        net.collect(part)
    net.fit_memory()
    return net


def test_patchcore_scores_match_the_reference_search_and_coreset():
    net = _fitted()
    blocked = _fitted(chunk=37, bank_chunk=11)
    assert torch.equal(net.bank, blocked.bank)
    test = _images(3, 1)
    with torch.no_grad():
        maps, blocked_maps = net(test), blocked(test)
        f = net.features(test)
        flat = f.movedim(1, -1).reshape(-1, f.shape[1])
        reference = squared_distances(flat, net.bank).min(dim=1).values  # one distance matrix, as before
    torch.testing.assert_close(blocked_maps, maps, rtol=1e-5, atol=1e-5)
    nearest = nearest_distances(flat, net.bank, 37, 11)
    torch.testing.assert_close(nearest, reference, rtol=1e-5, atol=1e-5)
    patches = torch.cat([net.features(p).movedim(1, -1).reshape(-1, f.shape[1]) for p in _images(12, 0).split(4)])
    assert torch.equal(net.bank, patches[_reference_coreset(patches, 64)])


def test_capped_patch_store_is_bounded_and_equal_to_the_full_store_when_the_cap_is_not_reached():
    per_image = 32 * 32
    uncapped = _fitted()
    roomy = _fitted(max_bank_patches=12 * per_image)
    assert torch.equal(roomy.bank, uncapped.bank)
    net = PatchCoreDetector(image_size=32, coreset_size=64, max_bank_patches=1500).eval()
    sizes = []
    for part in _images(12, 0).split(4):
        net.collect(part)
        sizes.append(len(net._collected[0]))
    assert sizes == [1500, 1500, 1500]
    net.fit_memory()
    assert net.bank.shape == (64, net.backbone.channels) and net.fitted
    with torch.no_grad():
        maps = net(_images(2, 1))
    assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all()


def test_padim_streaming_statistics_match_the_whole_set_formula():
    net = PaDiMDetector(image_size=32, n_features=16).eval()
    images = _images(10, 2)
    for part in images.split(3):
        net.collect(part)
    net.fit_memory()
    with torch.no_grad():
        f = net.features(images).flatten(2).permute(2, 0, 1)  # (L, N, C), every training image at once
    mean = f.mean(dim=1)
    centred = f - mean[:, None]
    cov = centred.transpose(1, 2) @ centred / (f.shape[1] - 1) + net.regularisation * torch.eye(f.shape[2])
    torch.testing.assert_close(net.mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.inv_cov, torch.linalg.inv(cov), rtol=1e-3, atol=1e-3)


@pytest.mark.requires_gpu
def test_patchcore_on_cuda_matches_the_cpu():
    cpu = _fitted()
    gpu = PatchCoreDetector(image_size=32, coreset_size=64).cuda().eval()
    for part in _images(12, 0).split(4):
        gpu.collect(part.cuda())
    gpu.fit_memory()
    torch.testing.assert_close(gpu.bank.cpu(), cpu.bank, rtol=1e-4, atol=1e-4)
    x = _images(2, 1)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-3, atol=1e-3)
    capped = PatchCoreDetector(image_size=32, coreset_size=64, max_bank_patches=4000).cuda().eval()
    capped.collect(_images(12, 0).cuda())
    assert capped._collected[0].is_cuda and len(capped._collected[0]) == 4000
    capped.fit_memory()
    with torch.no_grad():
        assert capped.bank.is_cuda and torch.isfinite(capped(x.cuda())).all()
