"""embodied_mem.splatting: the CPU rasteriser against a brute-force per-pixel loop, gradients,
camera conventions, seeding, fitting and pruning; gsplat's CUDA path against the CPU one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from embodied_mem.splatting import (
    FitConfig,
    GaussianField,
    View,
    fit,
    intrinsics,
    prune,
    rasterize,
    seed_gaussians,
    view_matrix,
)
from embodied_mem.splatting.raster import rasterize_torch

from embodied_mem.geometry import camera_mount, pinhole_camera, quaternion_to_matrix
from embodied_mem.types import Pose

WIDTH, HEIGHT = 14, 11


def scene(dtype=torch.float64, seed: int = 0):
    """A small scene: anisotropic rotated Gaussians at several depths, a few partly outside the
    image, and a stack of three near-opaque ones (the third must never show: the stop rule)."""
    g = torch.Generator().manual_seed(seed)
    n = 12
    means = torch.stack([
        (torch.rand(n, generator=g) - 0.5) * 2.4,
        (torch.rand(n, generator=g) - 0.5) * 1.8,
        2.0 + torch.rand(n, generator=g) * 2.0,
    ], dim=-1)
    scales = 0.05 + torch.rand(n, 3, generator=g) * 0.25
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.2 + 0.75 * torch.rand(n, generator=g)
    colors = torch.rand(n, 5, generator=g)
    stack = torch.tensor([[0.1, 0.05, 1.5], [0.1, 0.05, 1.6], [0.1, 0.05, 1.7]])
    means = torch.cat([means, stack])
    scales = torch.cat([scales, torch.full((3, 3), 0.3)])
    quats = torch.cat([quats, torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3)])
    opacities = torch.cat([opacities, torch.full((3,), 0.9999)])
    colors = torch.cat([colors, torch.eye(3, 5) * 1.0])
    K = torch.tensor([[9.0, 0.0, 7.2], [0.0, 9.5, 5.4], [0.0, 0.0, 1.0]])
    angle = 0.2
    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.tensor([[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]])
    viewmat[:3, 3] = torch.tensor([0.1, -0.05, 0.2])
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors, viewmat, K)]


def brute_force(means, quats, scales, opacities, colors, viewmat, K, width, height):
    """The 3DGS forward pass written out per pixel (numpy, independent of the package)."""
    means, quats, scales, opacities, colors, viewmat, K = (np.asarray(t, dtype=np.float64) for t in (means, quats, scales, opacities, colors, viewmat, K))
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    splats = []
    for m, q, s, o, c in zip(means, quats, scales, opacities, colors):
        rotation = quaternion_to_matrix(np.array([q[1], q[2], q[3], q[0]]))  # wxyz -> the project's xyzw
        sigma3 = rotation @ np.diag(s**2) @ rotation.T
        x, y, z = R @ m + t
        J = np.array([[fx / z, 0.0, -fx * x / z**2], [0.0, fy / z, -fy * y / z**2]])
        cov2 = J @ R @ sigma3 @ R.T @ J.T + 0.3 * np.eye(2)
        splats.append((z, np.array([fx * x / z + cx, fy * y / z + cy]), np.linalg.inv(cov2), o, c))
    splats.sort(key=lambda item: item[0])
    image = np.zeros((height, width, colors.shape[1]))
    depth = np.zeros((height, width))
    alpha_image = np.zeros((height, width))
    for row in range(height):
        for col in range(width):
            T = 1.0
            pixel = np.array([col + 0.5, row + 0.5])
            for z, centre, conic, o, c in splats:
                d = centre - pixel
                power = 0.5 * d @ conic @ d
                alpha = min(0.999, o * math.exp(-power))
                if power < 0 or alpha < 1.0 / 255.0:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                image[row, col] += alpha * T * c
                depth[row, col] += alpha * T * z
                T *= 1 - alpha
            alpha_image[row, col] = 1 - T
    return image, depth, alpha_image


def test_cpu_rasteriser_matches_brute_force():
    means, quats, scales, opacities, colors, viewmat, K = scene()
    rendered = rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, WIDTH, HEIGHT)
    image, depth, alpha = brute_force(means, quats, scales, opacities, colors, viewmat, K, WIDTH, HEIGHT)
    assert alpha.max() > 0.99 and alpha.min() < 0.5  # the scene has empty and saturated pixels
    np.testing.assert_allclose(rendered.colors.numpy(), image, atol=1e-9)
    np.testing.assert_allclose(rendered.depth.numpy(), depth, atol=1e-9)
    np.testing.assert_allclose(rendered.alpha.numpy(), alpha, atol=1e-9)


def test_cpu_rasteriser_matches_brute_force_on_a_larger_image_of_small_gaussians():
    """Small splats in a wider image: each Gaussian's pixel box must be exactly where it is."""
    g = torch.Generator().manual_seed(4)
    n = 40
    means = torch.stack([(torch.rand(n, generator=g) - 0.5) * 4.0, (torch.rand(n, generator=g) - 0.5) * 3.0, 2.0 + 2.0 * torch.rand(n, generator=g)], -1).double()
    # Four on the image's edges (u, v = 0.3 or W - 0.3, H - 0.3 at z = 2): boxes clipped there.
    edges = torch.tensor([[(0.3 - 20) / 10, 0.0, 2.0], [0.0, (0.3 - 15) / 10, 2.0], [(39.7 - 20) / 10, 0.3, 2.0], [0.3, (29.7 - 15) / 10, 2.0]], dtype=torch.float64)
    means = torch.cat([means[:-4], edges])
    scales = (0.02 + 0.05 * torch.rand(n, 3, generator=g)).double()
    quats = torch.randn(n, 4, generator=g).double()
    opacities = (0.3 + 0.6 * torch.rand(n, generator=g)).double()
    colors = torch.rand(n, 3, generator=g).double()
    K = torch.tensor([[20.0, 0.0, 20.0], [0.0, 20.0, 15.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)
    rendered = rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, 40, 30)
    image, depth, alpha = brute_force(means, quats, scales, opacities, colors, viewmat, K, 40, 30)
    assert (alpha > 0).mean() < 0.8 and min(alpha[:, 0].max(), alpha[0, :].max(), alpha[:, -1].max(), alpha[-1, :].max()) > 0.05
    np.testing.assert_allclose(rendered.colors.numpy(), image, atol=1e-9)
    np.testing.assert_allclose(rendered.alpha.numpy(), alpha, atol=1e-9)


def test_alpha_threshold_and_near_plane():
    """alpha >= 1/255 counts (gsplat's ALPHA_THRESHOLD), just below it does not; a Gaussian
    nearer than the 0.01 m near plane is culled."""
    K = torch.tensor([[9.0, 0.0, 7.5], [0.0, 9.0, 5.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)
    one = dict(quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64), scales=torch.full((1, 3), 0.05, dtype=torch.float64), colors=torch.ones(1, 1, dtype=torch.float64))
    centre = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    for opacity, shown in ((1.0 / 255.0, True), (0.9999 / 255.0, False), (1.0 / 255.5, False)):
        r = rasterize_torch(centre, one["quats"], one["scales"], torch.tensor([opacity], dtype=torch.float64), one["colors"], eye, K, WIDTH, HEIGHT)
        assert (r.alpha[5, 7].item() > 0) == shown, opacity
    near = dict(one, scales=torch.full((1, 3), 0.001, dtype=torch.float64))
    for z, shown in ((0.02, True), (0.009, False)):
        r = rasterize_torch(torch.tensor([[0.0, 0.0, z]], dtype=torch.float64), near["quats"], near["scales"], torch.tensor([0.9], dtype=torch.float64), near["colors"], eye, K, WIDTH, HEIGHT)
        assert (r.alpha.max().item() > 0) == shown, z


def test_intrinsics_and_view_matrix():
    K = intrinsics(80.0, 60.0, 80.0, 60.0, 4)
    assert torch.equal(K, torch.tensor([[20.0, 0.0, 20.0], [0.0, 15.0, 15.0], [0.0, 0.0, 1.0]]))
    assert torch.equal(intrinsics(8.0, 6.0, 4.0, 3.0), torch.tensor([[8.0, 0.0, 4.0], [0.0, 6.0, 3.0], [0.0, 0.0, 1.0]]))
    pose = Pose.from_xy_yaw(1.0, 2.0, 0.5, z=0.3).matrix()
    assert torch.allclose(view_matrix(pose).double() @ torch.as_tensor(pose), torch.eye(4, dtype=torch.float64), atol=1e-6)


def test_stop_rule_hides_what_is_behind_an_opaque_stack():
    means, quats, scales, opacities, colors, _, _ = scene()
    K = torch.tensor([[9.0, 0.0, 7.5], [0.0, 9.0, 5.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    stack = torch.tensor([[0.0, 0.0, 1.5], [0.0, 0.0, 1.6], [0.0, 0.0, 1.7]], dtype=torch.float64)  # on pixel (5, 7)'s centre
    rendered = rasterize_torch(stack, quats[-3:], scales[-3:], opacities[-3:], colors[-3:], torch.eye(4, dtype=torch.float64), K, WIDTH, HEIGHT)
    # The first takes alpha 0.999 (clamped); the second would take T to 1e-6 <= 1e-4: it and the third are dropped.
    centre = rendered.colors[5, 7]
    assert centre[0].item() == pytest.approx(0.999, abs=1e-9)
    assert centre[1].item() == 0.0 and centre[2].item() == 0.0
    assert rendered.alpha[5, 7].item() == pytest.approx(0.999, abs=1e-9)
    assert rendered.depth[5, 7].item() == pytest.approx(0.999 * 1.5, abs=1e-9)
    # A neighbour, where each alpha is lower, sees the second Gaussian.
    assert rendered.colors[5, 8, 1].item() > 0


def test_gradients_reach_every_gaussian_parameter_and_match_finite_differences():
    means, quats, scales, opacities, colors, viewmat, K = scene()
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    weights = torch.rand(HEIGHT, WIDTH, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(m, q, s, o, c):
        r = rasterize_torch(m, q, s, o, c, viewmat, K, WIDTH, HEIGHT)
        return (r.colors * weights).sum() + 0.3 * r.depth.sum() + 0.7 * r.alpha.sum()

    loss(*leaves).backward()
    visible = slice(0, 13)  # the stack's hidden two get nothing: correct
    for name, leaf in zip(("means", "quats", "scales", "opacities", "colors"), leaves):
        grad = leaf.grad[visible]
        assert torch.isfinite(grad).all(), name
        per_gaussian = grad.abs().reshape(grad.shape[0], -1).sum(dim=1)
        in_view = per_gaussian > 0
        assert in_view.sum() >= 10, f"{name}: only {int(in_view.sum())} Gaussians get a gradient"
    # Central differences on a few coordinates of each parameter.
    for index, leaf in enumerate(leaves):
        for flat in (0, 7, leaf.numel() // 2):
            values = [t.detach().clone() for t in leaves]
            step = 1e-6
            values[index].view(-1)[flat] += step
            up = loss(*values).item()
            values[index].view(-1)[flat] -= 2 * step
            down = loss(*values).item()
            numeric = (up - down) / (2 * step)
            assert leaf.grad.view(-1)[flat].item() == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_field_gradients_reach_all_six_parameter_groups():
    field = GaussianField(query_dim=4)
    means, quats, scales, opacities, colors, viewmat, K = scene(torch.float32)
    field.add(means[:12], scales[:12], colors[:12, :3], torch.randn(12, 4))
    field.params["quats"] = quats[:12].clone()
    params = {k: v.clone().requires_grad_(True) for k, v in field.params.items()}
    r = field.render(viewmat, K, WIDTH, HEIGHT, params=params)
    assert r.colors.shape == (HEIGHT, WIDTH, 7)
    (r.colors.sum() + r.depth.sum()).backward()
    for name, leaf in params.items():
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0, name


def test_a_gaussian_on_a_back_projected_pixel_renders_there():
    """Optical frame, pixel centres and body_T_camera agree between seeding and rendering."""
    camera = pinhole_camera(32, 24, 90.0, camera_mount(1.2, math.radians(20)))
    body = Pose.from_xy_yaw(1.0, -2.0, 0.7)
    world_T_camera = body.compose(camera.body_T_camera).matrix()
    depth = torch.zeros(12, 16)
    depth[3, 11] = 2.5
    view = View(torch.zeros(12, 16, 3), depth, view_matrix(world_T_camera), intrinsics(camera.fx, camera.fy, camera.cx, camera.cy, 2))
    field = GaussianField(0)
    assert seed_gaussians(field, view, FitConfig(), torch.Generator().manual_seed(0)) == 1
    point = field.means[0].numpy()
    # The same pixel through the project's own geometry (full resolution, pixel (7, 23) -> centre 23.5, 7.5 ... )
    u, v = (11 + 0.5) * 2, (3 + 0.5) * 2
    ray = np.array([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, 1.0]) * 2.5
    np.testing.assert_allclose(point, world_T_camera[:3, :3] @ ray + world_T_camera[:3, 3], atol=1e-5)
    assert point[2] < 1.2  # the camera looks down: the point is below it (z up, REP-103)
    field.params["opacity_logits"] = torch.full((1,), 5.0)
    rendered = field.render(view.viewmat, view.K, 16, 12, with_queries=False)
    assert np.unravel_index(int(torch.argmax(rendered.alpha)), (12, 16)) == (3, 11)
    assert rendered.depth[3, 11] / rendered.alpha[3, 11] == pytest.approx(2.5, rel=1e-4)


def _flat_view(width=24, height=18, distance=2.0):
    """A textured wall facing the camera (optical z forward)."""
    K = torch.tensor([[20.0, 0.0, width / 2], [0.0, 20.0, height / 2], [0.0, 0.0, 1.0]])
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rgb = torch.stack([(xs % 6 < 3).float(), (ys % 4 < 2).float() * 0.8, torch.full_like(xs, 0.3, dtype=torch.float32)], dim=-1)
    return View(rgb, torch.full((height, width), distance), torch.eye(4), K)


def test_seeding_fills_only_what_is_not_explained_and_fitting_lowers_the_loss():
    view = _flat_view()
    field = GaussianField(2)
    config = FitConfig(iterations=12, max_new_points=10_000)
    generator = torch.Generator().manual_seed(0)
    assert seed_gaussians(field, view, config, generator) == 24 * 18
    config_small = FitConfig(max_new_points=50)
    other = GaussianField(2)
    assert seed_gaussians(other, view, config_small, generator) == 50
    history = fit(field, [view], config)
    assert history[-1]["loss"] < history[0]["loss"]
    assert seed_gaussians(field, view, config, generator) < 24 * 18 * 0.2  # the wall is explained now
    # Something new in front of the wall is seeded.
    closer = _flat_view(distance=1.0)
    assert seed_gaussians(field, closer, config, generator) > 24 * 18 * 0.8


def test_prune_drops_transparent_and_huge_and_keeps_the_most_opaque():
    field = GaussianField(0)
    field.add(torch.zeros(5, 3), torch.tensor([[0.1] * 3, [0.1] * 3, [0.9] * 3, [0.1] * 3, [0.1] * 3]), torch.full((5, 3), 0.5))
    field.params["opacity_logits"] = torch.logit(torch.tensor([0.01, 0.5, 0.9, 0.8, 0.3]))
    dropped = prune(field, FitConfig(prune_opacity=0.02, max_scale=0.5, max_gaussians=2))
    assert dropped == 3
    np.testing.assert_allclose(sorted(field.opacities.numpy().tolist()), [0.5, 0.8], atol=1e-6)
    edge = GaussianField(0)
    edge.add(torch.zeros(2, 3), torch.full((2, 3), 0.5), torch.full((2, 3), 0.5))
    edge.params["opacity_logits"] = torch.logit(torch.tensor([0.02, 0.0199]))
    prune(edge, FitConfig(prune_opacity=float(edge.opacities[0]), max_scale=float(edge.scales.max())))
    assert len(edge) == 1  # opacity exactly at the threshold stays, scale exactly at the cap stays


def test_field_arrays_round_trip_and_refuse_corruption():
    field = GaussianField(3)
    field.add(torch.randn(4, 3), torch.full((4, 3), 0.1), torch.rand(4, 3), torch.randn(4, 3))
    arrays = field.to_arrays()
    again = GaussianField.from_arrays(arrays, 3)
    for name in field.params:
        assert torch.equal(field.params[name], again.params[name])
    for spoil in ("nan", "rows", "missing", "zero_quat"):
        bad = {k: v.copy() for k, v in arrays.items()}
        if spoil == "nan":
            bad["field_means"][0, 0] = np.nan
        elif spoil == "rows":
            bad["field_queries"] = bad["field_queries"][:3]
        elif spoil == "missing":
            del bad["field_colors" if "field_colors" in bad else "field_color_logits"]
        else:
            bad["field_quats"][1] = 0.0
        with pytest.raises(ValueError):
            GaussianField.from_arrays(bad, 3)


def test_gsplat_backend_refuses_cpu_tensors():
    means, quats, scales, opacities, colors, viewmat, K = scene(torch.float32)
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(means, quats, scales, opacities, colors, viewmat, K, WIDTH, HEIGHT, backend="gsplat")
    with pytest.raises(ValueError, match="backend"):
        rasterize(means, quats, scales, opacities, colors, viewmat, K, WIDTH, HEIGHT, backend="opengl")


@pytest.mark.gpu
def test_gsplat_cuda_and_cpu_paths_agree():
    means, quats, scales, opacities, colors, viewmat, K = scene(torch.float32)
    width, height = 64, 48
    K = K * torch.tensor([[4.0], [4.0], [1.0]])
    cpu = rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, backend="torch")
    leaves = [t.cuda().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    gpu = rasterize(*leaves, viewmat.cuda(), K.cuda(), width, height, backend="gsplat")
    np.testing.assert_allclose(gpu.colors.detach().cpu().numpy(), cpu.colors.numpy(), atol=2e-3)
    np.testing.assert_allclose(gpu.depth.detach().cpu().numpy(), cpu.depth.numpy(), atol=5e-3)
    np.testing.assert_allclose(gpu.alpha.detach().cpu().numpy(), cpu.alpha.numpy(), atol=2e-3)
    (gpu.colors.sum() + gpu.depth.sum()).backward()
    cpu_leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    again = rasterize(*cpu_leaves, viewmat, K, width, height, backend="torch")
    (again.colors.sum() + again.depth.sum()).backward()
    for gpu_leaf, cpu_leaf in zip(leaves, cpu_leaves):
        np.testing.assert_allclose(gpu_leaf.grad.cpu().numpy(), cpu_leaf.grad.numpy(), rtol=2e-2, atol=2e-2)
