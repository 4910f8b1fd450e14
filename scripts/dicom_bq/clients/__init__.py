"""The Google API clients: endpoints, discovery, Healthcare, BigQuery, Storage, retries."""
