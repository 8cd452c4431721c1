# SPDX-License-Identifier: Apache-2.0
"""
The KVAE on the paper's box_gravity environment (section 5.3): the same pipeline
as ``examples/bouncing_ball.py`` (see its flags), on its own data.

    python examples/gravity.py [--full] [--cuda] [--resume]
"""

from bouncing_ball import main, parse_args

if __name__ == "__main__":
    main(parse_args(env="box_gravity", doc=__doc__))
