"""The embedded default: the two iris classifiers, trained and registered by models.train."""
