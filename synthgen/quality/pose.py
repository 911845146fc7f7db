"""Head pose (yaw, pitch, roll, in degrees) from the 5 landmarks align records.

Method (geometric, closed form, no model file): a face whose eye centres and mouth corners lie in
one plane and whose nose tip stands D in front of it, seen under scaled orthographic projection.

    roll   the angle of the eye line from the image horizontal; positive when the image-right eye
           is lower. Every point is then rotated by -roll about the eye midpoint.
    yaw    turning the head by yaw moves the nose tip sideways by D sin(yaw) off the midline (the
           line from the eye midpoint to the mouth midpoint, which stays in the face plane), while
           the half eye distance W shrinks to W cos(yaw): tan(yaw) = (d / W_img) / (D / W), d the
           nose's signed offset from the midline at its own height. Positive: the nose points to
           the image's right (the person turns to their left).
    pitch  tilting the head moves the nose tip up by D sin(pitch) while the eye-to-mouth height H
           shrinks to H cos(pitch): the nose's relative height r = (nose - eyes) / (mouth - eyes)
           is r0 - (D / H) tan(pitch). Positive: chin up (the nose moves towards the eyes).

Constants: the frontal proportions come from the ArcFace template itself (r0 = 0.495: the nose
tip's height between the eye line and the mouth line; H / W = 2.31), the depth from adult
anthropometric averages (the nose tip about 28 mm in front of the pupils, which sit about 31 mm
from the midline: D / W = 0.9). A frontal face gives 0 on all three by construction; flipping an
image horizontally negates yaw and roll and keeps pitch. The error against dlib's 68 landmarks
fitted to a 3D face with solvePnP is measured in tests/test_quality_real.py (README, "Head pose").
"""

from __future__ import annotations

import numpy as np

# ArcFace 112 template: eyes (38.2946, 51.6963) (73.5318, 51.5014), nose (56.0252, 71.7366),
# mouth (41.5493, 92.3655) (70.7299, 92.2041)
_EYE_Y, _NOSE_Y, _MOUTH_Y = (51.6963 + 51.5014) / 2, 71.7366, (92.3655 + 92.2041) / 2
HALF_EYE = (73.5318 - 38.2946) / 2  # W in template pixels
R0 = (_NOSE_Y - _EYE_Y) / (_MOUTH_Y - _EYE_Y)  # frontal relative nose height, 0.495
H_OVER_W = (_MOUTH_Y - _EYE_Y) / HALF_EYE  # 2.31
D_OVER_W = 0.9  # nose-tip depth / half eye distance (anthropometric averages)
D_OVER_H = D_OVER_W / H_OVER_W

METHOD = ("geometric 5-point estimate: roll = eye-line angle; yaw = atan(nose offset from the eye-mouth midline / "
          f"half eye distance / {D_OVER_W}); pitch = atan((r0 - nose relative height) / {D_OVER_H:.3f}), "
          f"r0 = {R0:.3f} from the ArcFace template")


def head_pose(landmarks) -> np.ndarray:
    """[N, 5, 2] landmarks (left eye, right eye, nose, left mouth, right mouth; image x right, y
    down) -> [N, 3] float64 (yaw, pitch, roll) in degrees; NaN where a face has no landmarks
    (NaN input) or a degenerate shape (eyes on top of each other, mouth not below the eyes)."""
    p = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    out = np.full((len(p), 3), np.nan)
    if not len(p):
        return out
    le, re_, nose, ml, mr = (p[:, i] for i in range(5))
    eye_vec = re_ - le
    eye_len = np.hypot(eye_vec[:, 0], eye_vec[:, 1])
    roll = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    c, s = np.cos(-roll), np.sin(-roll)
    centre = (le + re_) / 2

    def derot(q):
        v = q - centre
        return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], 1)

    n, m = derot(nose), derot((ml + mr) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        height = m[:, 1]  # eye line at y = 0 after the rotation
        rel = n[:, 1] / height
        mid_x = m[:, 0] * rel  # the midline's x at the nose's height
        half = eye_len / 2
        yaw = np.arctan((n[:, 0] - mid_x) / half / D_OVER_W)
        pitch = np.arctan((R0 - rel) / D_OVER_H)
    ok = np.isfinite(p).all(axis=(1, 2)) & (eye_len > 1e-6) & (height > 1e-6)
    out[ok] = np.degrees(np.stack([yaw, pitch, roll], 1)[ok])
    return out


def project_model(yaw, pitch, roll, scale=1.0) -> np.ndarray:
    """The model this estimate assumes, rendered at a known pose: 5 image points [5, 2] (used by
    the tests to check that head_pose inverts it)."""
    w, h = HALF_EYE, HALF_EYE * H_OVER_W
    pts = np.array([[-w, 0, 0], [w, 0, 0], [0, R0 * h, -D_OVER_W * w],
                    [-0.83 * w, h, 0], [0.83 * w, h, 0]], np.float64)  # z towards the camera is negative
    a, b, g = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(g), -np.sin(g), 0], [np.sin(g), np.cos(g), 0], [0, 0, 1]])
    q = pts @ (rz @ rx @ ry).T
    return scale * q[:, :2] + 56
