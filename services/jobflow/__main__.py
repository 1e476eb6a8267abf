"""``python -m jobflow SERVICE``: run one service (receiver, processor, converter, informer,
or the operator); ``smoke``: check a running pipeline end to end with one job; ``topics`` and
``connector``: set up a Kafka and a Kafka Connect that jobflow does not manage."""

from __future__ import annotations

import argparse
import sys

from fastapi import FastAPI

from jobflow.core.service import serve
from jobflow.core.settings import KafkaSettings, PostgresSettings, ServiceSettings

# Each service is an image (services/Dockerfile); smoke is a check run from any of them. The
# pipeline's services carry the jobs; the operator sets up their schemas. topics and connector
# are the chart's hook Jobs without Strimzi, run from the operator's image.
PIPELINE_SERVICES = ("receiver", "processor", "converter", "informer")
SERVICES = (*PIPELINE_SERVICES, "operator")
COMMANDS = (*SERVICES, "smoke", "topics", "connector")


def build(service: str) -> tuple[FastAPI, ServiceSettings]:
    """The service's app and settings, read from the environment."""
    if service == "receiver":
        from jobflow.receiver.service import ReceiverSettings
        from jobflow.receiver.service import create as create_receiver

        receiver = ReceiverSettings()
        return create_receiver(receiver, KafkaSettings()), receiver
    if service == "processor":
        from jobflow.processor.service import ProcessorSettings
        from jobflow.processor.service import create as create_processor

        processor = ProcessorSettings()
        return create_processor(processor, KafkaSettings()), processor
    if service == "converter":
        from jobflow.converter.service import ConverterSettings
        from jobflow.converter.service import create as create_converter

        converter = ConverterSettings()
        return create_converter(converter, KafkaSettings()), converter
    from jobflow.informer.service import InformerSettings
    from jobflow.informer.service import create as create_informer

    informer = InformerSettings()
    return create_informer(informer, PostgresSettings()), informer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="jobflow", description=__doc__)
    parser.add_argument("service", choices=COMMANDS)
    service = parser.parse_args(argv).service
    if service == "operator":
        from jobflow.operator.run import main as run_operator

        run_operator()
        return
    if service == "smoke":
        from jobflow.smoke import main as run_smoke

        run_smoke()
        return
    if service == "topics":
        from jobflow.topics import main as run_topics

        sys.exit(run_topics())
    if service == "connector":
        from jobflow.connector import main as run_connector

        sys.exit(run_connector())
    app, settings = build(service)
    serve(app, settings, service)


if __name__ == "__main__":
    main()
