"""`sluice demo`: the whole closed loop on one machine, with real components and no cluster.

librdkafka's mock Kafka cluster (in a child process, so a broker outage is a real SIGSTOP),
producers at three priorities on the SDK's ThrottledProducer, a consumer group of fixed capacity,
and the operator's local mode in-process, publishing decisions to a temporary directory that the
producers read with DirectoryDecisions. A scripted scenario (steady, surge, broker outage,
recovery) drives it; the result is a live view, a timeline chart, a summary and a verdict.
"""
