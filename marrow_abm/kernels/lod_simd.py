"""Hand-vectorised LLVM code for the x sweep of the LOD step (used by ``kernels.diffusion``).

Why this exists: the Thomas recurrence along x runs along the contiguous axis, so it only
vectorises across *lines* (rows), and numba has no way to say "transpose these 4 x 4 values in
registers". Written as numba loops, the band had to be transposed element by element into a
tile and back (two scalar loads and stores per voxel, the main cost of the earlier kernel).
Here a 4 x 4 block of four rows is loaded as four vectors, transposed with eight
``shufflevector`` instructions, and the recurrence runs across the block's four columns with
one vector holding the four rows; four groups of four rows (16 lines) give four independent
dependency chains per column, which hides the multiply-add latency.

Only the x solve lives here: the reaction before it and the y elimination after it are plain
numba loops over contiguous rows, which LLVM vectorises by itself. The arithmetic is exactly
that of :func:`marrow_abm.kernels.diffusion.lod_step_ref` with the multiply-adds fused
(``llvm.fma``), which differs from the twin by rounding only.

Caching note: numba's on-disk cache of the kernels that call :func:`lod_x_band` is keyed on
``diffusion.py``, not on this file; after editing this file, touch ``diffusion.py`` (or clear
``marrow_abm/kernels/__pycache__``) so the callers are recompiled.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Lines (rows) solved together by :func:`lod_x_band`: four groups of four vector lanes.
X_BAND_LINES = 16
_GROUPS = X_BAND_LINES // 4
_LANES = 4


@intrinsic
def lod_x_band(typingctx, u, ivx, tile, su, nxp, r):
    """Thomas solve along x of 16 rows in place, with the precomputed signed inverse pivots.

    ``u`` holds the 16 right-hand-side rows, row k at ``u[k * su : k * su + nxp]`` (``su`` >=
    ``nxp``; a stride that is not a multiple of 4 KB keeps the rows in different L1 sets);
    ``ivx`` the band's signed inverse pivots in tile order, ``ivx[j * 16 + k]`` for column j of
    row k, negative where the west face is open; ``tile`` is scratch of ``nxp * 16`` values
    (forward-eliminated values in tile order). ``nxp`` must be a multiple of 4; padding columns
    carry positive pivots (closed faces) and zero right-hand sides. ``r`` is D dt / dx².

    Forward: y_j = (u_j + r_w y_{j-1}) |p_j|; back: x_j = y_j + r_w(j+1) |p_j| x_{j+1}, where
    r_w = r across an open face and 0 across a closed one.
    """
    arrays = (u, ivx, tile)
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in arrays):
        return None
    dt = u.dtype
    if dt not in (types.float64, types.float32) or ivx.dtype != dt or tile.dtype != dt:
        return None
    sig = types.void(u, ivx, tile, types.intp, types.intp, dt)

    def codegen(context, builder, signature, args):
        pu, piv, ptile = (context.make_array(signature.args[k])(context, builder, args[k]).data
                          for k in range(3))
        su_v, nxp_v, r_v = args[3:6]
        elt = context.get_data_type(dt)
        nbytes = 8 if dt == types.float64 else 4
        vt = ir.VectorType(elt, _LANES)
        intp = su_v.type
        i32 = ir.IntType(32)
        mask_t = ir.VectorType(i32, _LANES)
        zero = ir.Constant(vt, [ir.Constant(elt, 0.0)] * _LANES)
        r_vec = builder.insert_element(ir.Constant(vt, ir.Undefined), r_v, ir.Constant(i32, 0))
        r_vec = builder.shuffle_vector(r_vec, r_vec, ir.Constant(mask_t, [0] * _LANES))
        suffix = f"v4f{8 * nbytes}"
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt]),
                                              "llvm.fabs." + suffix)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                             "llvm.fma." + suffix)

        def const(v):
            return ir.Constant(intp, v)

        def vptr(base, idx):
            return builder.bitcast(builder.gep(base, [idx]), vt.as_pointer())

        def load(base, idx):
            return builder.load(vptr(base, idx), align=nbytes)

        def store(val, base, idx):
            builder.store(val, vptr(base, idx), align=nbytes)

        def shuffle(a, b, m):
            return builder.shuffle_vector(a, b, ir.Constant(mask_t, m))

        def transpose(rows):
            t0 = shuffle(rows[0], rows[1], [0, 4, 1, 5])
            t1 = shuffle(rows[0], rows[1], [2, 6, 3, 7])
            t2 = shuffle(rows[2], rows[3], [0, 4, 1, 5])
            t3 = shuffle(rows[2], rows[3], [2, 6, 3, 7])
            return [shuffle(t0, t2, [0, 1, 4, 5]), shuffle(t0, t2, [2, 3, 6, 7]),
                    shuffle(t1, t3, [0, 1, 4, 5]), shuffle(t1, t3, [2, 3, 6, 7])]

        def coupling(p):            # r where the sign bit marks an open face, else 0
            return builder.select(builder.fcmp_ordered("<", p, zero), r_vec, zero)

        n_blocks = builder.sdiv(nxp_v, const(_LANES))
        lines = const(X_BAND_LINES)

        def tile_index(j0, b, g):
            return builder.add(builder.mul(builder.add(j0, const(b)), lines), const(4 * g))

        # forward elimination: rows -> registers (transposed) -> tile
        y_carry = [cgutils.alloca_once_value(builder, zero) for _ in range(_GROUPS)]
        with cgutils.for_range(builder, n_blocks) as loop:
            j0 = builder.mul(loop.index, const(_LANES))
            for g in range(_GROUPS):
                cols = transpose([load(pu, builder.add(builder.mul(su_v, const(4 * g + a)), j0))
                                  for a in range(4)])
                y = builder.load(y_carry[g])
                for b in range(4):
                    t = tile_index(j0, b, g)
                    p = load(piv, t)
                    y = builder.fmul(builder.call(fma, [coupling(p), y, cols[b]]),
                                     builder.call(fabs, [p]))
                    store(y, ptile, t)
                builder.store(y, y_carry[g])
        # back substitution: tile -> registers -> transposed back into the rows
        x_carry = [cgutils.alloca_once_value(builder, zero) for _ in range(_GROUPS)]
        w_carry = [cgutils.alloca_once_value(builder, zero) for _ in range(_GROUPS)]
        with cgutils.for_range(builder, n_blocks) as loop:
            jb = builder.sub(builder.sub(n_blocks, const(1)), loop.index)
            j0 = builder.mul(jb, const(_LANES))
            for g in range(_GROUPS):
                x = builder.load(x_carry[g])
                w = builder.load(w_carry[g])
                cols = [None] * 4
                for b in range(3, -1, -1):
                    t = tile_index(j0, b, g)
                    p = load(piv, t)
                    x = builder.call(fma, [builder.fmul(w, builder.call(fabs, [p])), x,
                                           load(ptile, t)])
                    w = coupling(p)
                    cols[b] = x
                builder.store(x, x_carry[g])
                builder.store(w, w_carry[g])
                for a, row in enumerate(transpose(cols)):
                    store(row, pu, builder.add(builder.mul(su_v, const(4 * g + a)), j0))
        return context.get_dummy_value()

    return sig, codegen
