"""Running the loop on one machine: schedules, the scheduler and the supervisor of `refit up`."""
