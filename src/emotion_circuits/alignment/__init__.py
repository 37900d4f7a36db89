"""Cross-model alignment: maps between models' emotion subspaces, and the nulls they are judged against."""
