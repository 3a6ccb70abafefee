"""The example service that ``make serve`` runs."""
