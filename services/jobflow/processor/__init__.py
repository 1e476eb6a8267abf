"""processor: runs each job of receiver-topic (sleeps ``sleep`` ms) and reports it done."""
