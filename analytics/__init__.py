"""Reports: token and revenue analytics, forecasts, anomalies and the admin status screen."""
