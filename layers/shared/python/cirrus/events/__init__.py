"""Events of the archive: EventBridge events, the StudyStable checker and the change feed."""
