"""Conclusions from run folders: confidence intervals (``stats``), seeds as a sweep axis
(``seeds``), two runs compared image by image (``compare``), and the sweep report."""
