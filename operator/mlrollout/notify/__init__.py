"""Notifications: messages to people and systems when a rollout moves (docs/notifications.md).

`messages` builds the bodies (pure: a transition in, bytes out); `http` delivers one body to one URL behind a
small interface. The queue, the retries, the metrics and the Events are the controller's
(`mlrollout.controller.notifications`).
"""
