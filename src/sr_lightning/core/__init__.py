"""The SR benchmark protocol: every reported number passes through here.

``protocol`` (how a set is scored: Y or RGB, border, LR source, degradation), ``resize``
(MATLAB-exact bicubic imresize), ``metrics`` (PSNR/SSIM under a protocol) and ``inference``
(``super_resolve``: fp32, exact tiles, self-ensemble). The lowest layer: imports nothing else
of the package.
"""
