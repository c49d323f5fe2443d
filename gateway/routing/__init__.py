"""Who answers: the pure router, the routing in force and its changes, the follower, the change log."""
