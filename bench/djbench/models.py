from django.db import connection, models


class Customer(models.Model):
    name = models.CharField(max_length=100)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, db_index=True)
    total = models.IntegerField()
    note = models.CharField(max_length=200)


def seed() -> None:
    """Create the tables and the rows app.py has (100 customers, 2000 orders)."""
    with connection.schema_editor() as editor:
        for model in (Order, Customer):
            editor.execute(f"DROP TABLE IF EXISTS {model._meta.db_table}")
        editor.create_model(Customer)
        editor.create_model(Order)
    Customer.objects.bulk_create(Customer(id=i, name=f"customer {i}") for i in range(1, 101))
    Order.objects.bulk_create(
        Order(id=i, customer_id=1 + i % 100, total=i * 7 % 500, note=f"order {i}") for i in range(1, 2001)
    )
