"""The configuration file (``surety.toml``): policies, repositories, notification targets.

(Skeleton; ``load_config``/``check_config`` land with the config work.)
"""
