"""Register connections, record activity, and expire the idle ones."""

import conntable

table = conntable.ConnectionTable(idle_timeout=30.0, resolution=0.5, now=0.0)
for conn_id in range(1, 10_001):
    table[conn_id] = f"peer-{conn_id}"        # value: whatever you keep per connection
table.set_deadline(7, 12.0)                     # an absolute deadline for one connection

table.expire(20.0)                              # time passes on the table's clock
table.touch_many(range(1, 5_001))               # half the connections saw traffic at t=20

print("implementation:", conntable.IMPLEMENTATION)
print("wake up next at:", table.next_expiry())
expired = table.expire(31.0)                    # the untouched half is now idle
print(f"expired {len(expired)} of 10000; first: {expired[0]}")
print("still open:", len(table), "next expiry:", table.next_expiry())
