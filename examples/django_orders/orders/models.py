"""Read models: rows the views and the projection keep in step with the events."""

from django.db import models


class Order(models.Model):
    """One order as of its last event; saved in the same transaction as the events."""

    order_id = models.CharField(max_length=64, primary_key=True)
    customer = models.CharField(max_length=100)
    total_cents = models.IntegerField()
    status = models.CharField(max_length=20)
    version = models.IntegerField()


class CustomerTotal(models.Model):
    """Orders placed per customer: kept by the ``customer_totals`` projection."""

    customer = models.CharField(max_length=100, primary_key=True)
    orders = models.IntegerField()
    total_cents = models.BigIntegerField()
