"""Statistics: effect sizes, bootstrap CIs, permutation tests, BH-FDR and power, one path for every stage."""
