"""
Imaging: pure Pillow functions from untrusted bytes to derived images, run
on the image threads.  Nothing here knows the store, the database or HTTP.
"""
