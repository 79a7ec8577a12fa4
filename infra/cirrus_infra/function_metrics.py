"""Dashboard widgets of the EMF metrics that the ingest and DICOMweb functions write.

The functions write one series per site (ingest) or per operation (DICOMweb), as
``cirrus.lambda_metrics`` describes, so each widget charts them with a SEARCH expression that
finds every series of the deployment.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from cirrus.lambda_metrics import DEFAULT_NAMESPACE, DICOMWEB_SERVICE, INGEST_SERVICE

# The dimension that splits each function's series, besides Deployment and service.
INGEST_DIMENSION: Final = "Site"
DICOMWEB_DIMENSION: Final = "Operation"
_WIDTH: Final = 8


def search_expression(
    namespace: str,
    dimension: str,
    metric_name: str,
    deployment: str,
    service: str,
    statistic: str,
    period: Duration,
) -> str:
    """Return the SEARCH of every series of one metric of one deployment and service."""
    schema = f"{{{namespace},Deployment,{dimension},service}}"
    terms = f'MetricName="{metric_name}" Deployment="{deployment}" service="{service}"'
    return f"SEARCH('{schema} {terms}', '{statistic}', {int(period.to_seconds())})"


def function_metric_widgets(
    deployment: str, period: Duration, namespace: str = DEFAULT_NAMESPACE
) -> list[cloudwatch.GraphWidget]:
    """Return the widgets of the ingest and DICOMweb metrics of ``deployment``."""

    def series(
        service: str, dimension: str, metric_name: str, statistic: str, label: str
    ) -> cloudwatch.MathExpression:
        expression = search_expression(
            namespace, dimension, metric_name, deployment, service, statistic, period
        )
        return cloudwatch.MathExpression(
            expression=expression,
            using_metrics={},
            label=f"{label} ${{PROP('Dim.{dimension}')}}",
            period=period,
        )

    def ingest(metric_name: str, statistic: str, label: str) -> cloudwatch.MathExpression:
        return series(INGEST_SERVICE, INGEST_DIMENSION, metric_name, statistic, label)

    def dicomweb(metric_name: str, statistic: str, label: str) -> cloudwatch.MathExpression:
        return series(DICOMWEB_SERVICE, DICOMWEB_DIMENSION, metric_name, statistic, label)

    def graph(
        title: str,
        left: list[cloudwatch.IMetric],
        right: list[cloudwatch.IMetric] | None = None,
    ) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(title=title, left=left, right=right, width=_WIDTH)

    return [
        graph(
            "Ingest instances and bytes by site",
            [ingest("InstancesIndexed", "Sum", "Instances")],
            [ingest("IndexedBytes", "Sum", "Bytes")],
        ),
        graph(
            "Ingest latency from object creation (ms)",
            [
                ingest("IngestLatencyMilliseconds", "p50", "p50"),
                ingest("IngestLatencyMilliseconds", "p99", "p99"),
            ],
        ),
        graph("Ingest failures by site", [ingest("IngestFailures", "Sum", "Failures")]),
        graph(
            "DICOMweb requests by operation",
            [dicomweb("Requests", "Sum", "Requests")],
        ),
        graph(
            "DICOMweb errors by operation",
            [
                dicomweb("ServerErrors", "Sum", "5xx"),
                dicomweb("ClientErrors", "Sum", "4xx"),
            ],
        ),
        graph(
            "DICOMweb handler latency by operation (ms)",
            [
                dicomweb("RequestLatencyMilliseconds", "p50", "p50"),
                dicomweb("RequestLatencyMilliseconds", "p99", "p99"),
            ],
        ),
    ]
