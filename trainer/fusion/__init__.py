"""Voice and face together: pseudo-pairs, late fusion, temperatures, and the refit of both on
clips run through the serving path."""
