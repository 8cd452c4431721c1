# SPDX-License-Identifier: Apache-2.0
"""
The KVAE on the torque-controlled pendulum (paper section 5.2): 16x16 frames,
T=15, 500 training sequences, the torques as controls u_t (B_t u_t in the
LGSSM), dim_a=2, dim_z=3, K=2. The same pipeline as ``examples/bouncing_ball.py``.

    python examples/pendulum.py [--full] [--cuda] [--resume] [--vae mlp]
"""

from bouncing_ball import main, parse_args

PENDULUM = dict(frame_size=16, dim_z=3, dim_u=1, K=2)

if __name__ == "__main__":
    main(parse_args(env="pendulum", doc=__doc__, model=PENDULUM))
